//! Server-Sent Events, parsed incrementally as the WHATWG HTML specification says
//! ("Parsing an event stream"): bytes arrive in chunks split anywhere, lines end in CRLF, LF or
//! CR, a UTF-8 byte order mark may open the stream, `:` starts a comment, `data:` lines join
//! with LF, `event:` names the event, `id:` and `retry:` are remembered, and an event is
//! dispatched at a blank line (an unterminated last event is discarded).
//!
//! No crate: the maintained SSE crates are async clients or tied to an HTTP stack; this is the
//! small state machine the specification describes, fed from a blocking reader.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when none was given.
    pub event: String,
    /// The `data:` lines joined with LF (the final LF removed).
    pub data: String,
    /// The last event ID seen so far (`id:`), empty when none.
    pub id: String,
}

/// The incremental parser: feed it chunks, collect events.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line's bytes (without its ending).
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF opening this one belongs to it.
    after_cr: bool,
    /// Bytes seen so far (a BOM is only skipped at the very start).
    started: bool,
    /// A partial BOM at the start of the stream (fewer than 3 bytes seen).
    bom: Vec<u8>,
    data: String,
    has_data: bool,
    event: String,
    last_id: String,
    retry: Option<u64>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reconnection time the server asked for (`retry:`), in milliseconds (kept by the
    /// specification; a call is never reconnected, so only the tests read it).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Feeds the next bytes; every event completed by them is pushed to `out`, in order.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if !self.started {
            // Hold back a possible BOM until three bytes decide it.
            let take = (BOM.len() - self.bom.len()).min(chunk.len());
            self.bom.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.bom.len() < BOM.len() && BOM.starts_with(&self.bom) {
                return;
            }
            self.started = true;
            let held = std::mem::take(&mut self.bom);
            if held != BOM {
                self.feed_bytes(&held, out);
            }
        }
        self.feed_bytes(chunk, out);
    }

    fn feed_bytes(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        // An empty read must not end the wait for the LF of a CRLF cut after its CR.
        if chunk.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_bytes = &chunk[..end];
            let crlf = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            if crlf {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    // The LF may come in the next chunk.
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.process_line(line_bytes, out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(line_bytes);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }
        }
        self.line.extend_from_slice(chunk);
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            b"id" if !value.contains(&0) => {
                self.last_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

/// Parses a whole stream at once (for tests and the fuzz target).
pub fn parse_all(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser.feed(bytes, &mut out);
    out
}

/// The fuzz property: cutting the stream at the points `cuts` names (each taken modulo the
/// length) never changes the events parsed. Panics when it does.
pub fn check_split_invariance(bytes: &[u8], cuts: &[u8]) {
    let whole = parse_all(bytes);
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            if bytes.is_empty() {
                0
            } else {
                c as usize * bytes.len() / 256
            }
        })
        .collect();
    points.sort_unstable();
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points {
        parser.feed(&bytes[at..p], &mut out);
        at = p;
    }
    parser.feed(&bytes[at..], &mut out);
    assert_eq!(whole, out, "events differ when the stream is cut");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn spec_example_with_event_names() {
        let text = "event: image_generation.partial_image\ndata: {\"a\":1}\n\nevent: image_generation.completed\ndata: {\"b\":2}\n\n";
        assert_eq!(
            parse_all(text.as_bytes()),
            [
                ev("image_generation.partial_image", "{\"a\":1}", ""),
                ev("image_generation.completed", "{\"b\":2}", "")
            ]
        );
    }

    #[test]
    fn whatwg_examples() {
        // Multi-line data, comments, id, and an unterminated last event (discarded).
        let text = ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        assert_eq!(
            parse_all(text.as_bytes()),
            [
                ev("message", "first event", "1"),
                ev("message", "second event", "")
            ]
        );
        let text = "data\n\ndata\ndata\n\ndata:";
        assert_eq!(
            parse_all(text.as_bytes()),
            [ev("message", "", ""), ev("message", "\n", "")]
        );
        let text = "data:test\n\ndata: test\n\n";
        assert_eq!(
            parse_all(text.as_bytes()),
            [ev("message", "test", ""), ev("message", "test", "")]
        );
        let text = "data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(
            parse_all(text.as_bytes()),
            [ev("message", "YHOO\n+2\n10", "")]
        );
    }

    #[test]
    fn line_endings_crlf_cr_lf_and_bom() {
        for text in [
            "\u{feff}event: e\r\ndata: x\r\n\r\n",
            "event: e\rdata: x\r\r",
            "event: e\ndata: x\n\n",
            "event: e\r\ndata: x\n\r",
        ] {
            assert_eq!(parse_all(text.as_bytes()), [ev("e", "x", "")], "{text:?}");
        }
        // Only one BOM, only at the start.
        let events = parse_all("\u{feff}\u{feff}data: x\n\n".as_bytes());
        assert_eq!(
            events.len(),
            0,
            "a second BOM makes a field name that is ignored"
        );
    }

    #[test]
    fn retry_and_unknown_fields() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(
            b"retry: 3000\nfoo: bar\nretry: x1\ndata: [DONE]\n\n",
            &mut out,
        );
        assert_eq!(p.retry(), Some(3000));
        assert_eq!(out, [ev("message", "[DONE]", "")]);
    }

    #[test]
    fn events_without_data_are_not_dispatched_and_reset_the_name() {
        let out = parse_all(b"event: a\n\ndata: x\n\n");
        assert_eq!(out, [ev("message", "x", "")]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let text = "\u{feff}: comment\r\nevent: image_generation.partial_image\r\ndata: {\"b64_json\":\"AAAA\",\r\ndata: \"partial_image_index\":0}\r\n\r\nid: 7\rdata: two\r\rdata: [DONE]\n\n";
        let bytes = text.as_bytes();
        let whole = parse_all(bytes);
        assert_eq!(whole.len(), 3);
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut p = SseParser::new();
                let mut out = Vec::new();
                p.feed(&bytes[..a], &mut out);
                p.feed(&bytes[a..b], &mut out);
                p.feed(&bytes[b..], &mut out);
                assert_eq!(out, whole, "cut at {a} and {b}");
            }
        }
        // Byte by byte.
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in bytes {
            p.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, whole);
        check_split_invariance(bytes, &[1, 2, 3, 200, 255]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let out = parse_all(b"data: a\xFFb\n\n");
        assert_eq!(out[0].data, "a\u{FFFD}b");
    }
}
