//! The `save_dir` option: every returned image written to a file, so a host carries paths,
//! not megabytes of base64 or URLs that expire after an hour.

use super::error::Error;
use super::options::Options;
use super::request::Headers;
use super::transport;
use super::{agent, TraceEvent};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::io::Write;
use std::marker::PhantomData;
use std::ops::Range;
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
///
/// The answer is not parsed into values: one parse finds where each `b64_json` or `url`
/// string lies, each image is decoded from that place a piece at a time and written as it is
/// decoded (so a 48 MiB answer costs no second buffer of 36 MiB), and the result is the
/// answer's text with the `"file"` (or `"error"`) members spliced in and the saved `b64_json`
/// members cut out: everything else is kept byte for byte.
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
    let Some(found) = find_images(&json, SKELETON_MIN) else {
        return Ok(json);
    };
    let created = found.created.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let declared = found.output_format.as_deref().and_then(extension_of_format);
    // Offsets only from here on: the answer's text becomes bytes, cut and spliced at the end.
    let sources = found.sources;
    let json = json.into_bytes();
    let mut edits: Vec<Edit> = Vec::new();
    let mut written = 0usize;
    for (index, source) in sources.into_iter().enumerate() {
        let at = source.end();
        let outcome = save_source(
            &json, source, index, created, declared, dir, options, deadline, trace,
        );
        let failure = match outcome {
            Ok(Some(edit)) => {
                written += 1;
                edits.push(edit);
                continue;
            }
            Ok(None) => continue,
            Err(ItemError::Item(Error::Cancelled)) => return Err(Error::Cancelled),
            // Nothing could be written here yet: the folder itself is at fault, and the
            // remaining images would fail the same way.
            Err(ItemError::Write(err)) if written == 0 => {
                let answer = apply(json, &edits);
                let mut result = err.to_value();
                result["error"]["response"] =
                    serde_json::from_str(&answer).unwrap_or(Value::String(answer));
                return Ok(result.to_string());
            }
            Err(ItemError::Write(err) | ItemError::Item(err)) => err,
        };
        let error = serde_json::json!({"code": failure.code(), "message": failure.to_string()});
        edits.push(Edit {
            range: at..at,
            member: format!("\"error\":{error}"),
        });
    }
    Ok(apply(json, &edits))
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

/// String values at least this long (quotes included) are left out of the text serde_json
/// parses ([`Skeleton`]): image strings, not the keys, numbers and short strings around them.
const SKELETON_MIN: usize = 4096;

/// The answer's text as serde_json parses it to find the images: with each long string value
/// written as `""`, so that serde_json does not cross megabytes of base64 byte by byte (its
/// pass took three times as long as the scan that already validated the answer). The text
/// keeps the answer's structure, keys and every other value; [`Skeleton::locate`] takes a
/// value found in it back to its place in the answer.
struct Skeleton {
    /// `None` when the answer has no long string value: serde_json parses the answer itself.
    text: Option<String>,
    /// Each left-out string: where its `""` stands in `text`, and its range in the answer.
    marks: Vec<(usize, Range<usize>)>,
}

impl Skeleton {
    fn of(json: &str, min: usize) -> Skeleton {
        let long = super::json_scan::long_string_values(json.as_bytes(), min);
        if long.is_empty() {
            return Skeleton {
                text: None,
                marks: Vec::new(),
            };
        }
        let kept = json.len() - long.iter().map(|r| r.len() - 2).sum::<usize>();
        let mut text = String::with_capacity(kept);
        let mut marks = Vec::with_capacity(long.len());
        let mut at = 0;
        for range in long {
            // Quotes are ASCII, so every cut falls between characters.
            text.push_str(&json[at..range.start]);
            marks.push((text.len(), range.clone()));
            text.push_str("\"\"");
            at = range.end;
        }
        text.push_str(&json[at..]);
        Skeleton {
            text: Some(text),
            marks,
        }
    }

    /// What serde_json parses.
    fn text<'a>(&'a self, json: &'a str) -> &'a str {
        self.text.as_deref().unwrap_or(json)
    }

    /// The range in the answer of `raw`, a value borrowed from [`Skeleton::text`].
    fn locate(&self, json: &str, raw: &RawValue) -> Range<usize> {
        let text = self.text(json);
        let at = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        match self.marks.binary_search_by_key(&at, |(mark, _)| *mark) {
            Ok(k) => self.marks[k].1.clone(),
            Err(k) => {
                // Every left-out string before it: its length less the two quotes kept.
                let start = match k.checked_sub(1) {
                    Some(last) => {
                        let (mark, ref original) = self.marks[last];
                        original.end + (at - (mark + 2))
                    }
                    None => at,
                };
                start..start + raw.get().len()
            }
        }
    }
}

/// The parts of an answer that saving needs, borrowed from its text (no string copied).
#[derive(Default)]
struct Answer<'a> {
    created: Option<u64>,
    /// Located in the answer and read as a string after the parse.
    output_format: Option<&'a RawValue>,
    /// `None` when there is no `data` array; an item is `None` when it is not an object.
    data: Option<Vec<Option<Item<'a>>>>,
}

/// A data item's `b64_json` and `url` values as they stand in the text.
#[derive(Default)]
struct Item<'a> {
    b64_json: Option<&'a RawValue>,
    url: Option<&'a RawValue>,
}

/// Where an item's image comes from, as offsets into the answer's text.
#[derive(Debug, PartialEq)]
enum Source {
    /// A `b64_json` string: its content as written (JSON escapes such as `\/` or `\n`, rare,
    /// are only looked for when it does not decode as it stands), and its whole member
    /// (`"b64_json":"..."`) when that could be found, to be cut out with `drop_b64`.
    Base64 {
        content: Range<usize>,
        member: Option<Range<usize>>,
    },
    /// A `url` string.
    Url {
        url: String,
        end: usize,
    },
    None,
}

impl Source {
    /// Where a member can be added after the item's image value (0 for no image).
    fn end(&self) -> usize {
        match self {
            Source::Base64 { content, .. } => content.end + 1,
            Source::Url { end, .. } => *end,
            Source::None => 0,
        }
    }

    /// `locate` gives a value's range in the answer `json`.
    fn of(item: Option<&Item>, json: &str, locate: &dyn Fn(&RawValue) -> Range<usize>) -> Source {
        let Some(item) = item else {
            return Source::None;
        };
        let b64 = item.b64_json.filter(|raw| raw.get().starts_with('"'));
        if let Some(raw) = b64 {
            let Range { start, end } = locate(raw);
            let content = start + 1..end - 1;
            let member = member_start(json.as_bytes(), start).map(|m| m..end);
            return Source::Base64 { content, member };
        }
        let url = item.url.map(locate);
        match url.and_then(|range| {
            Some((
                serde_json::from_str::<String>(&json[range.clone()]).ok()?,
                range,
            ))
        }) {
            Some((url, range)) => Source::Url {
                url,
                end: range.end,
            },
            None => Source::None,
        }
    }
}

/// Where the member `"b64_json": <value at value_start>` begins, read backwards over the
/// colon and white space; `None` when the key is not written plainly (escaped letters).
fn member_start(json: &[u8], value_start: usize) -> Option<usize> {
    let before = json[..value_start].trim_ascii_end().strip_suffix(b":")?;
    let key = before.trim_ascii_end().strip_suffix(b"\"b64_json\"")?;
    Some(key.len())
}

/// A change to the answer's text: `range` replaced by `member` (`"name":value`), with a
/// comma before it when `range` is empty (an insertion after a value).
struct Edit {
    range: Range<usize>,
    member: String,
}

impl Edit {
    fn file(range: Range<usize>, path: &Path) -> Edit {
        let path = path.to_string_lossy();
        let value = serde_json::to_string(&path).unwrap_or_else(|_| "\"\"".into());
        Edit {
            range,
            member: format!("\"file\":{value}"),
        }
    }

    fn text(&self) -> String {
        let comma = if self.range.is_empty() { "," } else { "" };
        format!("{comma}{}", self.member)
    }
}

/// The answer with the edits (in text order) made: in place when nothing is cut (only
/// insertions after the values), else assembled from the kept pieces, which are small once
/// the base64 is cut out.
fn apply(json: Vec<u8>, edits: &[Edit]) -> String {
    let text = if edits.iter().all(|e| e.range.is_empty()) {
        let mut json = json;
        for edit in edits.iter().rev() {
            json.splice(edit.range.clone(), edit.text().into_bytes());
        }
        json
    } else {
        let cut: usize = edits.iter().map(|e| e.range.len()).sum();
        let mut out = Vec::with_capacity(json.len() - cut + edits.len() * 300);
        let mut at = 0;
        for edit in edits {
            out.extend_from_slice(&json[at..edit.range.start]);
            out.extend_from_slice(edit.text().as_bytes());
            at = edit.range.end;
        }
        out.extend_from_slice(&json[at..]);
        out
    };
    // Valid UTF-8: the text's own pieces, cut at ASCII bytes, and serde_json's strings.
    String::from_utf8(text).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Saves one item's image; the edit that records it, `None` when the item has no image.
#[allow(clippy::too_many_arguments)]
fn save_source(
    json: &[u8],
    source: Source,
    index: usize,
    created: u64,
    declared: Option<&'static str>,
    dir: &Path,
    options: &Options,
    deadline: Instant,
    trace: &mut dyn FnMut(&TraceEvent),
) -> Result<Option<Edit>, ItemError> {
    let invalid = |e: base64_simd::Error| {
        Error::Io(format!("image {index}: b64_json is not valid base64: {e}"))
    };
    let stem = format!("{created}_{index}");
    let write_failed = |e: std::io::Error| {
        ItemError::Write(Error::Io(format!(
            "image {index} could not be written in {}: {e}",
            dir.display()
        )))
    };
    let write = |bytes: &[u8]| {
        // The bytes decide; the declared output_format only when they are not recognised.
        let ext = sniff(bytes).or(declared).unwrap_or("bin");
        write_new(dir, &stem, ext, bytes).map_err(write_failed)
    };
    let cut = |member: Option<Range<usize>>, end: usize| {
        member.filter(|_| options.drop_b64).unwrap_or(end..end)
    };
    let edit = match source {
        Source::None => return Ok(None),
        Source::Base64 { content, member } => {
            let end = content.end + 1;
            let raw = &json[content.clone()];
            // Canonical base64 (what servers send) is decoded and written a piece at a time:
            // no second buffer of the image's size, and the text stays as it is.
            let path = match save_streamed(raw, dir, &stem, declared).map_err(write_failed)? {
                Streamed::Written(path) => path,
                Streamed::NotCanonical => {
                    let bytes = decode(raw).or_else(|e| {
                        // JSON escapes in the string: decode its unescaped text.
                        if !raw.contains(&b'\\') {
                            return Err(e);
                        }
                        let quoted = &json[content.start - 1..end];
                        serde_json::from_slice::<String>(quoted)
                            .map_or(Err(e), |text| decode(text.as_bytes()))
                    });
                    write(&bytes.map_err(invalid)?)?
                }
            };
            Edit::file(cut(member, end), &path)
        }
        Source::Url { url, end } => {
            let bytes = match url.strip_prefix("data:") {
                Some(data_url) => decode_data_url(data_url).ok_or_else(|| {
                    Error::Io(format!(
                        "image {index}: the data: URL is not valid base64 data"
                    ))
                })?,
                None => download(&url, index, options, deadline, trace)?,
            };
            Edit::file(end..end, &write(&bytes)?)
        }
    };
    Ok(Some(edit))
}

/// Base64 bytes decoded at a time when an image is written as it is decoded (a multiple of 4).
const PIECE: usize = 256 << 10;

/// What became of an image decoded and written a piece at a time.
enum Streamed {
    /// Written to this file.
    Written(PathBuf),
    /// Not canonical base64: nothing was written (to be decoded forgivingly instead).
    NotCanonical,
}

/// Why writing a decoded image stopped.
enum PieceError {
    NotCanonical,
    Io(std::io::Error),
}

impl From<std::io::Error> for PieceError {
    fn from(err: std::io::Error) -> Self {
        PieceError::Io(err)
    }
}

/// Decodes `b64` a piece of [`PIECE`] bytes at a time and writes it to a new file in `dir`
/// (see [`write_new_with`]) named by its first bytes, when it is canonical base64 with or
/// without padding (what servers send). The pieces are held to what the whole would be: `=`
/// only at the very end, and canonical last bits. One pass over the text, and the decoded
/// bytes go to the file from a buffer that stays in the cache.
fn save_streamed(
    b64: &[u8],
    dir: &Path,
    stem: &str,
    declared: Option<&'static str>,
) -> std::io::Result<Streamed> {
    let last_form = if b64.len() % 4 == 0 {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    };
    let pieces = b64.len().div_ceil(PIECE).max(1);
    let mut buf = vec![0u8; PIECE / 4 * 3];
    let decode_piece = |i: usize, buf: &mut [u8]| -> Result<usize, PieceError> {
        let piece = &b64[i * PIECE..((i + 1) * PIECE).min(b64.len())];
        let form = if i + 1 == pieces {
            last_form
        } else {
            &base64_simd::STANDARD_NO_PAD
        };
        form.decode(piece, base64_simd::Out::from_slice(buf))
            .map(|bytes| bytes.len())
            .map_err(|_| PieceError::NotCanonical)
    };
    let Ok(first) = decode_piece(0, &mut buf) else {
        return Ok(Streamed::NotCanonical);
    };
    let ext = sniff(&buf[..first]).or(declared).unwrap_or("bin");
    let written = write_new_with(dir, stem, ext, |file| {
        file.write_all(&buf[..first])?;
        for i in 1..pieces {
            let n = decode_piece(i, &mut buf)?;
            file.write_all(&buf[..n])?;
        }
        Ok(())
    });
    match written {
        Ok(path) => Ok(Streamed::Written(path)),
        Err(PieceError::NotCanonical) => Ok(Streamed::NotCanonical),
        Err(PieceError::Io(err)) => Err(err),
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Answer<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AnswerVisitor(PhantomData))
    }
}

struct AnswerVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for AnswerVisitor<'a> {
    type Value = Answer<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an image answer")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Answer<'a>, M::Error> {
        let mut answer = Answer::default();
        // A key given twice counts once, the last time (as a JSON object would).
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "created" => answer.created = map.next_value::<&RawValue>()?.get().parse().ok(),
                "output_format" => answer.output_format = Some(map.next_value::<&RawValue>()?),
                "data" => answer.data = map.next_value::<Data>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(answer)
    }
}

/// `data`: its items when it is an array, else `None`.
struct Data<'a>(Option<Vec<Option<Item<'a>>>>);

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataVisitor(PhantomData))
    }
}

struct DataVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for DataVisitor<'a> {
    type Value = Data<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Data<'a>, S::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<MaybeItem>()? {
            items.push(item.0);
        }
        Ok(Data(Some(items)))
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Data<'a>, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Data(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
    fn visit_unit<E>(self) -> Result<Data<'a>, E> {
        Ok(Data(None))
    }
}

/// A data item: its fields when it is an object, else `None`.
struct MaybeItem<'a>(Option<Item<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeItem<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor(PhantomData))
    }
}

struct ItemVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
    type Value = MaybeItem<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<MaybeItem<'a>, M::Error> {
        let mut item = Item::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "b64_json" => item.b64_json = Some(map.next_value()?),
                "url" => item.url = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(MaybeItem(Some(item)))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<MaybeItem<'a>, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(MaybeItem(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
    fn visit_unit<E>(self) -> Result<MaybeItem<'a>, E> {
        Ok(MaybeItem(None))
    }
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
    let bytes = decode(b64.as_bytes())
        .map_err(|e| Error::Io(format!("{stem}: b64_json is not valid base64: {e}")))?;
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

/// Decodes base64 as servers send it: standard alphabet, padding optional, line breaks and
/// other ASCII white space left out (WHATWG's forgiving-base64, SIMD where the CPU has it).
fn decode(b64: &[u8]) -> Result<Vec<u8>, base64_simd::Error> {
    base64_simd::forgiving_decode_to_vec(b64)
}

/// `image/png;base64,AAAA` (what follows `data:`); only base64 data URLs carry images.
fn decode_data_url(rest: &str) -> Option<Vec<u8>> {
    let (meta, data) = rest.split_once(',')?;
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return None;
    }
    decode(data.as_bytes()).ok()
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

/// Writes `bytes` to a new file in `dir` (see [`write_new_with`]).
fn write_new(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    write_new_with(dir, stem, ext, |file| file.write_all(bytes))
}

/// Writes what `fill` writes to `dir/<stem>.<ext>`, or `<stem>_2.<ext>`, ... when the name is
/// taken (concurrent calls in one second share `created`). The bytes go to a temporary file
/// first, synced, then get their name by a hard link that fails instead of replacing (a rename
/// would silently overwrite another call's image); readers never see a partial file, and a
/// `fill` that fails leaves no file behind.
fn write_new_with<E: From<std::io::Error>>(
    dir: &Path,
    stem: &str,
    ext: &str,
    fill: impl FnOnce(&mut std::fs::File) -> Result<(), E>,
) -> Result<PathBuf, E> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{stem}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = std::fs::File::create_new(&tmp)?;
        fill(&mut file)?;
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
        )
        .into())
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

/// What saving reads from an answer.
#[derive(Debug, PartialEq)]
struct Found {
    created: Option<u64>,
    output_format: Option<String>,
    /// One per item of `data`, as offsets into the answer.
    sources: Vec<Source>,
}

/// Reads what saving needs from the answer `json`, through a [`Skeleton`] leaving out string
/// values of `min` bytes and more; `None` when it is not an object with a `data` array.
fn find_images(json: &str, min: usize) -> Option<Found> {
    let skeleton = Skeleton::of(json, min);
    let answer = serde_json::from_str::<Answer>(skeleton.text(json)).ok()?;
    let locate = |raw: &RawValue| skeleton.locate(json, raw);
    let output_format = answer
        .output_format
        .and_then(|raw| serde_json::from_str::<String>(&json[locate(raw)]).ok());
    let sources = answer
        .data?
        .iter()
        .map(|item| Source::of(item.as_ref(), json, &locate))
        .collect();
    Some(Found {
        created: answer.created,
        output_format,
        sources,
    })
}

/// Whether the skeleton changes nothing saving reads from `json` (for the fuzz target): the
/// same created, output_format and sources with every string value left out, with the long
/// ones left out, and with none.
pub(crate) fn skeleton_agrees(json: &str) -> bool {
    let plain = find_images(json, usize::MAX);
    find_images(json, SKELETON_MIN) == plain && find_images(json, 1) == plain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The skeleton changes nothing saving reads: every string value left out (1), the long
    /// ones (the default), none; with escapes, keys as long as images, a `data:` URL, values
    /// of every kind around them, and answers that are not image answers.
    #[test]
    fn the_skeleton_finds_what_the_answer_holds() {
        let long = "iVBORw0KGgo".repeat(600);
        let escaped = format!("{}\\/{}\\u0041", &long[..3000], &long[3000..]);
        let key = "k".repeat(5000);
        let answers = [
            format!(r#"{{"created":7,"data":[{{"b64_json":"{long}","revised_prompt":"p"}}]}}"#),
            format!(
                r#" {{ "output_format" : "webp" , "data" : [ {{ "url" : "data:image/png;base64,{long}" }} ,
                   {{ "b64_json" : "{escaped}" }}, 5, "{long}", [], {{"b64_json":7,"url":"https://x/y"}} ],
                   "{key}" : "{long}", "created" : 12 , "usage" : {{"n":[1.5,true,null,"{long}"]}} }}"#
            ),
            format!(
                r#"{{"data":[{{"b64_json":"a"}},{{"{key}":1,"b64_json":"{long}"}}],"data":[{{"url":"u"}}]}}"#
            ),
            format!(r#"{{"output_format":"{long}","created":"3","data":{{"b64_json":"{long}"}}}}"#),
            format!(r#"{{"data":"{long}"}}"#),
            format!(r#"["{long}"]"#),
            r#"{"created":1,"data":[{"b64_json":""}]}"#.to_string(),
        ];
        for json in &answers {
            let plain = find_images(json, usize::MAX);
            assert_eq!(find_images(json, SKELETON_MIN), plain, "{json:.200}");
            assert_eq!(find_images(json, 1), plain, "{json:.200}");
        }
        // Long string values are left out of the text serde_json parses; keys never are.
        let skeleton = Skeleton::of(&answers[1], SKELETON_MIN);
        let text = skeleton.text(&answers[1]);
        assert!(
            text.len() < 400 + key.len() && text.contains(&key),
            "{text:.400}"
        );
        assert_eq!(skeleton.marks.len(), 5);
    }

    #[test]
    fn magic_bytes_name_the_format() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("jpeg"));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(sniff(b"hello"), None);
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn canonical_base64_is_written_a_piece_at_a_time_with_every_byte() {
        use base64::Engine;
        let standard = base64::engine::general_purpose::STANDARD;
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let piece_bytes = PIECE / 4 * 3;
        let lens = [
            0,
            1,
            2,
            3,
            100,
            piece_bytes - 1,
            piece_bytes,
            piece_bytes + 1,
            2 * piece_bytes + 2,
        ];
        for len in lens {
            let mut bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            if len >= 8 {
                bytes[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
            }
            let b64 = standard.encode(&bytes);
            for text in [b64.clone(), b64.trim_end_matches('=').to_string()] {
                let stem = format!("{len}_{}", text.len());
                let Ok(Streamed::Written(path)) =
                    save_streamed(text.as_bytes(), dir, &stem, Some("webp"))
                else {
                    panic!("len {len}: not written");
                };
                let ext = if len >= 8 { "png" } else { "webp" };
                assert_eq!(path, dir.join(format!("{stem}.{ext}")));
                assert!(std::fs::read(&path).unwrap() == bytes, "len {len}: bytes");
                std::fs::remove_file(path).unwrap();
            }
        }
        assert!(files_in(dir).is_empty());
    }

    #[test]
    fn base64_that_is_not_canonical_in_any_piece_leaves_no_file() {
        use base64::Engine;
        let standard = base64::engine::general_purpose::STANDARD;
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let good = standard.encode(vec![1u8; 2 * PIECE]).into_bytes();
        let mut cases: Vec<Vec<u8>> = Vec::new();
        // A byte outside the alphabet in the first piece, and in a later one.
        for at in [1001, PIECE + 5, good.len() - 3] {
            let mut bad = good.clone();
            bad[at] = b'*';
            cases.push(bad);
        }
        // Padding before the end: at the end of the first piece, where that piece alone
        // would accept it.
        let mut bad = good.clone();
        bad[PIECE - 1] = b'=';
        cases.push(bad);
        // A length no base64 has; and last bits that are not canonical.
        cases.push(good[..good.len() - 3].to_vec());
        cases.push(b"QUJ=".to_vec());
        for (k, case) in cases.iter().enumerate() {
            assert!(
                matches!(
                    save_streamed(case, dir, "x", None),
                    Ok(Streamed::NotCanonical)
                ),
                "case {k}"
            );
            assert!(files_in(dir).is_empty(), "case {k}: a file was left");
        }
        // What falls back to the forgiving decoder, which takes non-canonical last bits.
        assert_eq!(decode(b"QUJ=").unwrap(), b"AB");
        assert!(decode(&cases[0]).is_err());
        assert!(decode(&cases[3]).is_err());
    }

    #[test]
    fn members_are_found_only_when_written_plainly() {
        let json = br#"{"a":1, "b64_json" :  "QUJD","b64\u005fjson":"QUJD"}"#;
        let value = json.windows(6).position(|w| w == b"\"QUJD\"").unwrap();
        assert_eq!(member_start(json, value), Some(8));
        let escaped = json.len() - 8;
        assert_eq!(member_start(json, escaped), None);
    }

    #[test]
    fn edits_splice_the_file_members() {
        let json = br#"{"data":[{"b64_json":"QUJD","x":1},{"url":"u"}]}"#.to_vec();
        let b64 = 10..27;
        assert_eq!(&json[b64.clone()], br#""b64_json":"QUJD""#);
        let url_end = json.len() - 3;
        let cut = [
            Edit::file(b64, Path::new("a.png")),
            Edit::file(url_end..url_end, Path::new("b\"c")),
        ];
        assert_eq!(
            apply(json.clone(), &cut),
            r#"{"data":[{"file":"a.png","x":1},{"url":"u","file":"b\"c"}]}"#
        );
        let kept = [Edit::file(27..27, Path::new("a.png"))];
        assert_eq!(
            apply(json, &kept),
            r#"{"data":[{"b64_json":"QUJD","file":"a.png","x":1},{"url":"u"}]}"#
        );
    }

    #[test]
    fn base64_with_line_breaks_and_without_padding() {
        assert_eq!(decode(b"aGVs\nbG8").unwrap(), b"hello");
        assert_eq!(
            decode_data_url("image/png;base64,aGVsbG8=").unwrap(),
            b"hello"
        );
        assert!(decode_data_url("text/plain,hello").is_none());
    }
}
