//! One walk over a response body: UTF-8 validation, JSON validation (RFC 8259) and the
//! echoed-token scrub, together. No tree is built and nothing is copied unless the token is
//! found.
//!
//! Strings, where an image answer's bytes are (base64), go at memory speed: the next `"` or
//! `\\` is found with `memchr` (SIMD), the bytes before it are checked for control and
//! non-ASCII bytes in one vector pass (only a string with non-ASCII text is then validated as
//! UTF-8, by `std`), and the token is looked for with `memchr::memmem` in strings written
//! without escapes; a string with escapes is matched on its decoded characters (KMP).
//!
//! The scrub follows the one redaction rule of the library ([`super::error::scrubbable`]):
//! every occurrence of the token inside one JSON string (an object key or a value) is replaced
//! by `***`, whether its characters are written literally or as escapes (`\"`, `\\`, `\/`,
//! `\u0041`). The replaced span lies inside the string and `***` needs no escaping, so the
//! result is valid JSON again. An occurrence that is not inside one string (in a number, or
//! spanning JSON syntax) is not replaced: it cannot be without changing the document's
//! structure. Replacement goes left to right without overlaps, as [`str::replace`] does.

use super::error::scrubbable;
use std::ops::Range;

/// Deepest nesting of arrays and objects accepted: the limit of serde_json's `Value` parser
/// (it refuses the 128th level), so that every result parses there too. Hosts parse results
/// with recursive parsers; no real answer nests more than a few levels.
pub const MAX_DEPTH: usize = 127;

/// What `***` replaces, and the replacement.
const MASK: &[u8] = b"***";

/// A decoded string unit that is not ASCII (never part of a token, which is printable ASCII).
const NOT_ASCII: u32 = u32::MAX;

/// Why a body is not JSON (for the error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotJson {
    /// The bytes are not UTF-8.
    Utf8,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Anything else: a syntax error, a control character in a string, trailing text.
    Syntax,
}

/// Validates `body` as UTF-8 JSON text (RFC 8259: any value at the top, whitespace around
/// it) and returns it as a string with every occurrence of `token` inside a JSON string
/// replaced by `***` (when `token` is [`scrubbable`]). Returns the body unchanged with the
/// reason when it is not JSON.
pub fn scrub_json(body: Vec<u8>, token: &str) -> Result<String, (Vec<u8>, NotJson)> {
    let hits = match scan(&body, token.as_bytes()) {
        Ok(hits) => hits,
        Err(why) => {
            // The scan stops at the first fault; bad UTF-8 further on still makes the body
            // "not UTF-8" for the message.
            let why = if why == NotJson::Utf8 || std::str::from_utf8(&body).is_err() {
                NotJson::Utf8
            } else {
                why
            };
            return Err((body, why));
        }
    };
    let mut bytes = if hits.is_empty() {
        body
    } else {
        replace(&body, &hits)
    };
    // A token that holds `*` can be formed again by a `***` and its neighbours
    // (`ab***cde` in `abab***cdecde`): replace until none is left. Each round shrinks the
    // text, so this ends; other tokens never need a second round.
    if !hits.is_empty() && token.contains('*') {
        loop {
            let again = scan(&bytes, token.as_bytes()).expect("still JSON");
            if again.is_empty() {
                break;
            }
            bytes = replace(&bytes, &again);
        }
    }
    debug_assert!(std::str::from_utf8(&bytes).is_ok());
    // SAFETY: `scan` accepted `body`, which includes validating all of it as UTF-8 (bytes
    // outside strings must be ASCII JSON syntax; the bytes of a string between its ASCII
    // quotes and escapes are checked by `std::str::from_utf8` when any is not ASCII). Replacing whole ASCII-delimited spans inside strings by the ASCII
    // `***` keeps it UTF-8. The validator is checked against `std::str::from_utf8` by the unit
    // tests below and the `json_scan` fuzz target.
    Ok(unsafe { String::from_utf8_unchecked(bytes) })
}

/// The string *values* (not keys) of the JSON text `json`, which must already be valid, whose
/// text from quote to quote inclusive is at least `min` bytes long: their ranges, quotes
/// included, in order. Strings are crossed with the same vector pass as the scan, so a 48 MiB
/// image string costs a fraction of an instruction per byte (serde_json's own skip takes
/// about three times as long). Text that is not JSON gives some ranges, never a panic.
pub(crate) fn long_string_values(json: &[u8], min: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'"', &json[i..]) {
        let start = i + k;
        let mut j = start + 1;
        loop {
            let Some(rest) = json.get(j..) else {
                return out;
            };
            j += span(rest, b'"').stop;
            match json.get(j) {
                Some(b'"') => break,
                // A backslash and the character it escapes (never the closing quote; the hex
                // digits of `\uXXXX` are neither quotes nor backslashes).
                Some(_) => j += 2,
                None => return out,
            }
        }
        let end = j + 1;
        let is_key = json[end..].trim_ascii_start().first() == Some(&b':');
        if end - start >= min && !is_key {
            out.push(start..end);
        }
        i = end;
    }
    out
}

/// Whether `bytes` are UTF-8 JSON text (as [`scrub_json`] decides, without a token).
pub fn is_json(bytes: &[u8]) -> bool {
    scan(bytes, b"").is_ok()
}

/// Whether the JSON text `json` may hold `token` under the rule (literally, or escaped: only
/// with a backslash); false means [`scrub_json_text`] would return it unchanged.
pub fn may_hold(json: &str, token: &str) -> bool {
    scrubbable(token) && (json.contains(token) || json.contains('\\'))
}

/// Applies the one redaction rule to a JSON text we made ourselves (small: error objects,
/// header maps). Returns `json` unchanged when it holds no occurrence.
pub fn scrub_json_text(json: String, token: &str) -> String {
    if !may_hold(&json, token) {
        return json;
    }
    match scrub_json(json.into_bytes(), token) {
        Ok(text) => text,
        // Not reachable for serde_json's output; never return the text unscrubbed.
        Err((bytes, _)) => String::from_utf8_lossy(&bytes).replace(token, MASK_STR),
    }
}

const MASK_STR: &str = "***";

fn replace(body: &[u8], hits: &[Range<usize>]) -> Vec<u8> {
    let removed: usize = hits.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(body.len() - removed + hits.len() * MASK.len());
    let mut at = 0;
    for hit in hits {
        out.extend_from_slice(&body[at..hit.start]);
        out.extend_from_slice(MASK);
        at = hit.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// Validates `bytes` and returns the byte ranges of the token's occurrences inside strings
/// (none when `token` is not [`scrubbable`]).
fn scan(bytes: &[u8], token: &[u8]) -> Result<Vec<Range<usize>>, NotJson> {
    let token = match std::str::from_utf8(token) {
        Ok(t) if scrubbable(t) => token,
        _ => &[],
    };
    let mut s = Scanner::new(bytes, token);
    s.document()?;
    Ok(s.hits)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The token's bytes; empty when nothing is scrubbed.
    tok: &'a [u8],
    /// The token's finder for strings written without escapes (built at the first string
    /// long enough to hold the token).
    finder: Option<memchr::memmem::Finder<'a>>,
    /// A byte of the token outside standard base64's alphabet (the `-` of `sk-...` keys), when
    /// it has one: an escape-free string without it cannot hold the token, and base64 never
    /// holds it, so the pass that finds the string's end ([`span`]) rules out an image string
    /// without a substring search.
    rare: Option<u8>,
    /// KMP failure function of `tok`, for strings with escapes (built at the first one).
    fail: Vec<usize>,
    /// Raw start offsets of the last `tok.len()` units matched one by one.
    ring: Vec<usize>,
    /// Units recorded in `ring` so far.
    units: usize,
    hits: Vec<Range<usize>>,
}

/// What [`span`] found: where the string's text stops, and what the bytes before it hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// Index of the first `"` or `\`, or the length when there is none.
    stop: usize,
    /// A control character or a non-ASCII byte before `stop` (as `i8`, exactly the values
    /// below 0x20).
    low: bool,
    /// The byte asked for before `stop`.
    seen: bool,
}

/// Runs of string text: up to the first `"` or `\` of `b`, whether a control or non-ASCII
/// byte comes before it, and whether `rare` does.
///
/// With AVX2 (nearly every x86-64 processor since 2013) this is one pass, 64 bytes a step,
/// instead of three (`memchr2` for the stop, a check of the span, `memchr` for the token's
/// rare byte): for a 48 MiB image string, which leaves the cache between passes, that is two
/// reads of the whole answer from memory saved.
#[inline]
fn span(b: &[u8], rare: u8) -> Span {
    #[cfg(target_arch = "x86_64")]
    if b.len() >= 64 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2 (checked just above), all that `span_avx2`'s target
        // feature requires.
        return unsafe { span_avx2(b, rare) };
    }
    span_portable(b, rare)
}

/// [`span`] in three passes, each one the compiler or `memchr` vectorises on any target.
fn span_portable(b: &[u8], rare: u8) -> Span {
    let stop = memchr::memchr2(b'"', b'\\', b).unwrap_or(b.len());
    let text = &b[..stop];
    Span {
        stop,
        low: text.iter().fold(false, |any, &c| any | ((c as i8) < 0x20)),
        seen: memchr::memchr(rare, text).is_some(),
    }
}

/// [`span`] in one pass of AVX2 compares: the stop is looked for in each step, the rest is
/// gathered in two registers and looked at once, at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn span_avx2(b: &[u8], rare: u8) -> Span {
    use std::arch::x86_64::*;
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    // As signed bytes, controls and non-ASCII bytes are exactly those below 0x20.
    let space = _mm256_set1_epi8(0x20);
    let rare_v = _mm256_set1_epi8(rare as i8);
    let mut low = _mm256_setzero_si256();
    let mut seen = _mm256_setzero_si256();
    let load = |at: usize| {
        assert!(at + 32 <= b.len());
        // SAFETY: the 32 bytes from `at` are inside `b` (asserted just above: a compare the
        // loops below hardly notice); `_mm256_loadu_si256` needs no alignment.
        unsafe { _mm256_loadu_si256(b.as_ptr().add(at).cast()) }
    };
    let stops =
        |v: __m256i| _mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, backslash));
    let mut i = 0;
    while i + 64 <= b.len() {
        let (v0, v1) = (load(i), load(i + 32));
        if _mm256_movemask_epi8(_mm256_or_si256(stops(v0), stops(v1))) != 0 {
            break;
        }
        low = _mm256_or_si256(
            low,
            _mm256_or_si256(_mm256_cmpgt_epi8(space, v0), _mm256_cmpgt_epi8(space, v1)),
        );
        seen = _mm256_or_si256(
            seen,
            _mm256_or_si256(_mm256_cmpeq_epi8(v0, rare_v), _mm256_cmpeq_epi8(v1, rare_v)),
        );
        i += 64;
    }
    while i + 32 <= b.len() {
        let v = load(i);
        if _mm256_movemask_epi8(stops(v)) != 0 {
            break;
        }
        low = _mm256_or_si256(low, _mm256_cmpgt_epi8(space, v));
        seen = _mm256_or_si256(seen, _mm256_cmpeq_epi8(v, rare_v));
        i += 32;
    }
    // The block with the stop, or the last bytes: the portable pass, over at most 63 bytes.
    let rest = span_portable(&b[i..], rare);
    Span {
        stop: i + rest.stop,
        low: rest.low || _mm256_movemask_epi8(low) != 0,
        seen: rest.seen || _mm256_movemask_epi8(seen) != 0,
    }
}

/// Standard base64's alphabet and padding (RFC 4648 section 4): nearly every byte of an image
/// answer.
fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8], tok: &'a [u8]) -> Self {
        Scanner {
            b,
            i: 0,
            tok,
            finder: None,
            rare: tok.iter().copied().find(|&c| !is_base64(c)),
            fail: Vec::new(),
            ring: Vec::new(),
            units: 0,
            hits: Vec::new(),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), NotJson> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.fault())
        }
    }

    /// The error for the byte at `i`: UTF-8 when it starts no valid UTF-8 sequence.
    fn fault(&self) -> NotJson {
        match self.peek() {
            Some(c) if c >= 0x80 => NotJson::Utf8,
            _ => NotJson::Syntax,
        }
    }

    /// A whole document: one value between optional whitespace, iteratively (no recursion:
    /// the nesting is a bit stack, 1 for an object).
    fn document(&mut self) -> Result<(), NotJson> {
        let mut depth = 0usize;
        let mut objects: u128 = 0;
        'value: loop {
            self.ws();
            // A value: a container opens (and then needs its first member), or a value ends.
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    self.i += 1;
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(NotJson::TooDeep);
                    }
                    objects = objects << 1 | u128::from(open == b'{');
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        depth -= 1;
                        objects >>= 1;
                    } else {
                        if open == b'{' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                _ => return Err(self.fault()),
            }
            // After a value: close containers, or a comma and the next member.
            loop {
                self.ws();
                if depth == 0 {
                    return if self.i == self.b.len() {
                        Ok(())
                    } else {
                        Err(self.fault())
                    };
                }
                let in_object = objects & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if in_object {
                            self.ws();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if in_object => {}
                    Some(b']') if !in_object => {}
                    _ => return Err(self.fault()),
                }
                self.i += 1;
                depth -= 1;
                objects >>= 1;
            }
        }
    }

    /// An object member's name and its colon (whitespace before the name already skipped).
    fn key(&mut self) -> Result<(), NotJson> {
        if self.peek() != Some(b'"') {
            return Err(self.fault());
        }
        self.string()?;
        self.ws();
        self.expect(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), NotJson> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(NotJson::Syntax)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; what follows is the caller's.
    fn number(&mut self) -> Result<(), NotJson> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(NotJson::Syntax),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(NotJson::Syntax);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(NotJson::Syntax);
            }
        }
        Ok(())
    }

    /// A string from its opening quote to past its closing one; records the token's
    /// occurrences in its decoded characters.
    fn string(&mut self) -> Result<(), NotJson> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        let mut rare_seen = false;
        loop {
            // The next quote or backslash, with the bytes before it checked in the same
            // vector pass; the long base64 strings of an image answer cost a fraction of an
            // instruction per byte.
            // Without a rare byte to look for, `"` stands in: it never comes before the stop.
            let found = span(&self.b[self.i..], self.rare.unwrap_or(b'"'));
            let stop = self.i + found.stop;
            rare_seen |= found.seen;
            let span = &self.b[self.i..stop];
            if found.low {
                if span.iter().any(|&c| c < 0x20) {
                    return Err(NotJson::Syntax);
                }
                // A multi-byte character never includes `"` or `\\` (ASCII bytes).
                if std::str::from_utf8(span).is_err() {
                    return Err(NotJson::Utf8);
                }
            }
            self.i = stop;
            match self.peek() {
                Some(b'"') => break,
                Some(_) => {
                    self.escape()?;
                    escaped = true;
                }
                None => return Err(NotJson::Syntax),
            }
        }
        let end = self.i;
        self.i += 1;
        // A string holds at least as many raw bytes as decoded units.
        if !self.tok.is_empty() && end - start >= self.tok.len() {
            if escaped {
                self.match_decoded(start, end);
            } else if rare_seen || self.rare.is_none() {
                self.match_plain(start, end);
            }
        }
        Ok(())
    }

    /// Occurrences in a string written without escapes: its raw bytes are its characters.
    /// The caller has ruled out a string without the token's rare byte.
    fn match_plain(&mut self, start: usize, end: usize) {
        let tok = self.tok;
        let finder = self
            .finder
            .get_or_insert_with(|| memchr::memmem::Finder::new(tok));
        let hits = &mut self.hits;
        hits.extend(
            finder
                .find_iter(&self.b[start..end])
                .map(|at| start + at..start + at + tok.len()),
        );
    }

    /// Occurrences in a string with escapes (already validated): KMP over its decoded units,
    /// so that `\u0041` matches `A`.
    fn match_decoded(&mut self, start: usize, end: usize) {
        if self.fail.is_empty() {
            let tok = self.tok;
            self.fail = vec![0; tok.len()];
            let mut k = 0;
            for i in 1..tok.len() {
                while k > 0 && tok[i] != tok[k] {
                    k = self.fail[k - 1];
                }
                if tok[i] == tok[k] {
                    k += 1;
                }
                self.fail[i] = k;
            }
            self.ring = vec![0; tok.len()];
        }
        let first = u32::from(self.tok[0]);
        let after = self.i;
        self.i = start;
        let mut state = 0usize;
        while self.i < end {
            let at = self.i;
            let unit = match self.b[at] {
                b'\\' => self.escape().unwrap_or(NOT_ASCII),
                c if c >= 0x80 => {
                    self.i += utf8_len(c);
                    NOT_ASCII
                }
                c => {
                    self.i += 1;
                    u32::from(c)
                }
            };
            // A unit that neither continues a partial match nor starts one is never part of
            // a match: it is not recorded (a match's units stay consecutive in the ring).
            if state > 0 || unit == first {
                state = self.step(state, unit, at);
            }
        }
        self.i = after;
    }

    /// One KMP step over a decoded unit that began at raw offset `start` and ends at `i`;
    /// records a hit.
    #[inline]
    fn step(&mut self, mut state: usize, unit: u32, start: usize) -> usize {
        let m = self.tok.len();
        self.ring[self.units % m] = start;
        self.units += 1;
        while state > 0 && u32::from(self.tok[state]) != unit {
            state = self.fail[state - 1];
        }
        if u32::from(self.tok[state]) == unit {
            state += 1;
        }
        if state == m {
            // The match's first unit was recorded m units ago (all of its units went through
            // here: `match_decoded` skips only units at state 0 that are not the token's
            // first character).
            let from = self.ring[(self.units - m) % m];
            self.hits.push(from..self.i);
            state = 0;
        }
        state
    }

    /// An escape from its backslash; returns the decoded unit (NOT_ASCII past U+007F).
    fn escape(&mut self) -> Result<u32, NotJson> {
        let c = self.b.get(self.i + 1).copied();
        self.i += 2;
        Ok(match c {
            Some(b'"') => u32::from(b'"'),
            Some(b'\\') => u32::from(b'\\'),
            Some(b'/') => u32::from(b'/'),
            Some(b'b') => 0x08,
            Some(b'f') => 0x0C,
            Some(b'n') => u32::from(b'\n'),
            Some(b'r') => u32::from(b'\r'),
            Some(b't') => u32::from(b'\t'),
            Some(b'u') => {
                let hex = self.b.get(self.i..self.i + 4).ok_or(NotJson::Syntax)?;
                let mut code = 0u32;
                for &h in hex {
                    let v = (h as char).to_digit(16).ok_or(NotJson::Syntax)?;
                    code = code << 4 | v;
                }
                self.i += 4;
                // Lone surrogates are allowed, as RFC 8259's grammar (and serde_json) does.
                if code < 0x80 {
                    code
                } else {
                    NOT_ASCII
                }
            }
            _ => return Err(NotJson::Syntax),
        })
    }
}

/// The length of the UTF-8 sequence its (valid) lead byte `c` starts.
fn utf8_len(c: u8) -> usize {
    match c {
        0xF0.. => 4,
        0xE0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IgnoredAny;

    /// [`span`] against a byte-at-a-time reference: one special byte (a stop, a control, a
    /// non-ASCII byte, the rare byte) at every offset of strings across the block sizes, alone
    /// and before or after a stop, through the AVX2 path (where the processor has it) and the
    /// portable one.
    #[test]
    fn span_finds_the_stop_and_what_comes_before_it() {
        fn reference(b: &[u8], rare: u8) -> Span {
            let stop = b
                .iter()
                .position(|&c| c == b'"' || c == b'\\')
                .unwrap_or(b.len());
            Span {
                stop,
                low: b[..stop].iter().any(|&c| !(0x20..0x80).contains(&c)),
                seen: b[..stop].contains(&rare),
            }
        }
        let rare = b'-';
        let mut checked = 0;
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 95, 96, 97, 200, 1000] {
            let base: Vec<u8> = (0..len).map(|i| b"ABCxyz019+/="[i % 12]).collect();
            let mut cases = vec![base.clone()];
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, 0x7f, 0x80, 0xff, rare] {
                    let mut b = base.clone();
                    b[at] = special;
                    cases.push(b.clone());
                    // And a stop somewhere else, before or after it.
                    for stop_at in [at / 2, at + (len - at) / 2] {
                        if stop_at != at && stop_at < len {
                            let mut b = b.clone();
                            b[stop_at] = b'"';
                            cases.push(b);
                        }
                    }
                }
            }
            for b in &cases {
                let want = reference(b, rare);
                assert_eq!(span(b, rare), want, "{b:?}");
                assert_eq!(span_portable(b, rare), want, "{b:?}");
                checked += 1;
            }
        }
        assert!(checked > 40_000, "{checked}");
    }

    /// The reference: what the result path did before (std's UTF-8 check, then serde_json
    /// skipping the value), plus serde_json's nesting limit for a `Value`.
    fn reference(bytes: &[u8]) -> bool {
        std::str::from_utf8(bytes).is_ok_and(|s| {
            serde_json::from_str::<IgnoredAny>(s).is_ok()
                && !serde_json::from_str::<serde_json::Value>(s)
                    .is_err_and(|e| e.to_string().starts_with("recursion limit"))
        })
    }

    fn same_as_serde(text: &[u8]) {
        assert_eq!(
            is_json(text),
            reference(text),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }

    const TOKEN: &str = "sk-live-ABCdef123456";

    #[test]
    fn agrees_with_serde_json_on_hand_picked_documents() {
        let cases: &[&[u8]] = &[
            b"{}",
            b"[]",
            b" {} ",
            b"\t[1,2]\r\n",
            b"0",
            b"-0",
            b"-",
            b"01",
            b"1.",
            b"1.5",
            b"1e",
            b"1e+",
            b"1E-7",
            b"-1.5e10",
            b"2.",
            b".5",
            b"+1",
            b"true",
            b"tru",
            b"nul",
            b"null ",
            b"nullx",
            b"\"a\"",
            b"\"a",
            b"\"\\u00e9\"",
            b"\"\\u00G9\"",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"\"\\udc00x\"",
            b"\"tab\there\"",
            b"\"\x7f\"",
            b"\"\x1f\"",
            b"{\"a\":1,}",
            b"[1,]",
            b"[,1]",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{1:2}",
            b"{\"a\":1 \"b\":2}",
            b"[1 2]",
            b"{\"a\":[{\"b\":[]}]}",
            b"[]]",
            b"[[]",
            b"{}{}",
            b"{} x",
            b"",
            b"   ",
            b"\xEF\xBB\xBF{}",
            b"\"\xC3\xA9\"",
            b"\"\xC3\"",
            b"\"\xE0\x80\x80\"",
            b"\"\xED\xA0\x80\"",
            b"\"\xF4\x90\x80\x80\"",
            b"\"\xF0\x9F\x98\x80\"",
            b"\xC3\xA9",
            b"[\"\xFF\"]",
            b"{\"\xC3\xA9\":\"\xE2\x82\xAC\"}",
            b"[1,2,3,{\"k\":[true,false,null]}]",
            b"\"\\/\\b\\f\\n\\r\\t\\\\\\\"\"",
            b"[-]",
            b"[0.e1]",
            b"[1e01]",
            b"[00]",
        ];
        for case in cases {
            same_as_serde(case);
        }
    }

    #[test]
    fn long_strings_are_checked_to_every_byte() {
        // Spans of 256 bytes and more take the AVX2 check where the processor has it.
        for len in [255, 256, 257, 1000, 4103] {
            for at in [0, 1, len / 2, len - 1, len] {
                for bad in [
                    &b"\x01"[..],
                    b"\x1f",
                    b"\x7f",
                    b"\xff",
                    b"\xC3\xA9",
                    b"\xC3",
                    b"\xED\xA0\x80",
                ] {
                    let mut doc = b"[\"".to_vec();
                    doc.extend(std::iter::repeat_n(b'A', len));
                    doc.splice(2 + at..2 + at, bad.iter().copied());
                    doc.extend_from_slice(b"\"]");
                    same_as_serde(&doc);
                }
            }
        }
    }

    #[test]
    fn nesting_limit_is_serde_jsons() {
        for depth in 120..135 {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            same_as_serde(doc.as_bytes());
            let doc = format!(
                "{}1{}",
                "{\"a\":[".repeat(depth / 2),
                "]}".repeat(depth / 2)
            );
            same_as_serde(doc.as_bytes());
        }
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(scan(deep.as_bytes(), b""), Err(NotJson::TooDeep));
        // A million levels cost nothing (no recursion).
        assert!(!is_json("[".repeat(1 << 20).as_bytes()));
    }

    /// xorshift64*: deterministic, no crate.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn agrees_with_serde_json_on_200_000_random_documents() {
        // Pieces of JSON glued at random: mostly near-valid text, which finds the edges.
        const PARTS: [&[u8]; 34] = [
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b"\"",
            b"\\",
            b"\\u",
            b"00",
            b"e9",
            b"d8",
            b"1",
            b"0",
            b"-",
            b".",
            b"e",
            b"+",
            b" ",
            b"\n",
            b"true",
            b"null",
            b"fals",
            b"\"k\":",
            b"\"v\"",
            b"\xC3\xA9",
            b"\xE2\x82",
            b"\xAC",
            b"\xF0\x9F\x98\x80",
            b"\xFF",
            b"\x01",
            b"\x7f",
            b"sk-live-",
            b"ABCdef123456",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut valid = 0;
        for _ in 0..200_000 {
            let n = rng(&mut state) % 12;
            let mut doc = Vec::new();
            for _ in 0..n {
                doc.extend_from_slice(PARTS[(rng(&mut state) % PARTS.len() as u64) as usize]);
            }
            same_as_serde(&doc);
            if is_json(&doc) {
                valid += 1;
                let out = scrub_json(doc.clone(), TOKEN).expect("valid");
                assert!(reference(out.as_bytes()), "{out}");
            }
        }
        assert!(valid > 1000, "only {valid} valid documents: a weak test");
    }

    #[test]
    fn the_scrub_is_the_per_string_rule_on_random_documents() {
        // The json_scan fuzz target's property (every string equals its redacted decoded
        // form; nothing else changes), on documents with long base64 runs, the token written
        // plainly, split, and with escapes, and multi-byte characters; for a token with a byte
        // outside base64 (looked for with memchr first), one without (memmem alone), and one
        // that can only be written with an escape (KMP over decoded characters).
        for (token, forms) in [
            (
                "sk-live-ABCd/ef1",
                [
                    "sk-live-ABCd/ef1",
                    "sk-live-ABCd\\/ef1",
                    "\\u0073k\\u002dlive-ABCd/ef1",
                    "sk-live-",
                    "ABCd/ef1",
                    "sk-sk-live-ABCd/ef1sk-live",
                ],
            ),
            (
                "ABCdef123456+/",
                [
                    "ABCdef123456+/",
                    "ABCdef123456+\\/",
                    "\\u0041BCdef123456+/",
                    "ABCdef",
                    "123456+/",
                    "ABCABCdef123456+/ABC",
                ],
            ),
            (
                "sk-live-AB\"Cd/ef1",
                [
                    "sk-live-AB\\\"Cd/ef1",
                    "sk-live-AB\\\"Cd\\/ef1",
                    "\\u0073k-live-AB\\u0022Cd/ef1",
                    "sk-live-",
                    "AB\\\"Cd/ef1",
                    "sk-sk-live-AB\\\"Cd/ef1sk-live",
                ],
            ),
        ] {
            let parts = [
                "\"",
                "\",\"",
                "\":\"",
                "{\"k\":\"",
                "\"}",
                "[\"",
                "\"]",
                "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAeiklEQVR4nA3PEdPCAACA4e6C",
                "Жёлтая альпака ",
                "\\n\\t\\\\",
            ];
            let mut data = vec![token.len() as u8];
            data.extend(token.bytes().map(|c| c - 0x20));
            let prefix = data.len();
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            let mut changed = 0;
            for _ in 0..50_000 {
                data.truncate(prefix);
                data.extend_from_slice(b"[\"");
                for _ in 0..rng(&mut state) % 10 {
                    let k = (rng(&mut state) % (parts.len() + forms.len()) as u64) as usize;
                    let part = if k < parts.len() {
                        parts[k]
                    } else {
                        forms[k - parts.len()]
                    };
                    data.extend_from_slice(part.as_bytes());
                }
                data.extend_from_slice(b"\"]");
                crate::fuzzing::json_scan(&data);
                let body = &data[prefix..];
                if is_json(body) && scrub_json(body.to_vec(), token).unwrap().as_bytes() != body {
                    changed += 1;
                }
            }
            assert!(
                changed > 5000,
                "{token}: only {changed} documents held the token: a weak test"
            );
        }
    }

    fn scrub(text: &str, token: &str) -> String {
        scrub_json(text.as_bytes().to_vec(), token).expect("JSON")
    }

    #[test]
    fn token_in_a_number_is_left_and_the_result_stays_json() {
        // The defect of the substring scrub: `{"created":17***}`.
        assert_eq!(
            scrub(r#"{"created":1712345678}"#, "12345678"),
            r#"{"created":1712345678}"#
        );
        assert_eq!(
            scrub(r#"{"created":1712345678,"m":"x12345678y"}"#, "12345678"),
            r#"{"created":1712345678,"m":"x***y"}"#
        );
    }

    #[test]
    fn token_in_values_and_keys_with_any_characters_is_replaced() {
        for token in ["sk-live-ABCdef123456", "pa$$w0rd!", "12345678", "a b c d e"] {
            let text = format!(r#"{{"m":"bad key {token}.","{token}":[1,"{token}{token}"]}}"#);
            assert_eq!(
                scrub(&text, token),
                r#"{"m":"bad key ***.","***":[1,"******"]}"#,
                "{token}"
            );
        }
    }

    #[test]
    fn escaped_forms_of_the_token_are_replaced() {
        let token = r#"pa"ss\wo/rd"#;
        for written in [
            r#"pa\"ss\\wo/rd"#,
            r#"pa\"ss\\wo\/rd"#,
            r#"\u0070a\u0022ss\u005cwo\u002Frd"#,
        ] {
            let text = format!(r#"{{"error":"key {written} refused"}}"#);
            assert_eq!(
                scrub(&text, token),
                r#"{"error":"key *** refused"}"#,
                "{written}"
            );
        }
    }

    #[test]
    fn a_token_the_mask_forms_again_is_replaced_until_none_is_left() {
        // Found by the json_scan fuzz target: a token of stars, and one holding `***`.
        assert_eq!(
            scrub(&format!(r#"["{}"]"#, "*".repeat(90)), "************"),
            r#"["*********"]"#
        );
        let out = scrub(r#"["abab***cdecde"]"#, "ab***cde");
        assert!(!out.contains("ab***cde"), "{out}");
        assert_eq!(
            super::super::error::redact("abab***cdecde", "ab***cde"),
            "***"
        );
    }

    #[test]
    fn tokens_shorter_than_the_minimum_are_left() {
        // The other side of the rule: a 7-byte token would hit ordinary words.
        assert_eq!(scrub(r#"{"m":"sk-abcd"}"#, "sk-abcd"), r#"{"m":"sk-abcd"}"#);
        assert_eq!(scrub(r#"{"m":"sk-abcde"}"#, "sk-abcde"), r#"{"m":"***"}"#);
        assert_eq!(scrub(r#"{"m":"x"}"#, ""), r#"{"m":"x"}"#);
    }

    #[test]
    fn occurrences_across_strings_or_syntax_are_left() {
        let token = "abcdefgh";
        assert_eq!(scrub(r#"["abcd","efgh"]"#, token), r#"["abcd","efgh"]"#);
        // Across the fast path's 8-byte words, and with partial matches before the real one.
        let text = format!(r#"{{"k":"{}ababcdefgh{}"}}"#, "x".repeat(13), "y".repeat(9));
        assert_eq!(
            scrub(&text, token),
            format!(r#"{{"k":"{}ab***{}"}}"#, "x".repeat(13), "y".repeat(9))
        );
    }

    #[test]
    fn replacement_matches_str_replace_on_plain_strings() {
        // For strings without escapes the scrub is str::replace inside each string.
        let mut state = 7u64;
        let token = "abaabab";
        let token = format!("{token}x"); // 8 bytes
        for _ in 0..20_000 {
            let len = rng(&mut state) % 40;
            let s: String = (0..len)
                .map(|_| ['a', 'b', 'x', 'é'][(rng(&mut state) % 4) as usize])
                .collect();
            let expected = format!("[\"{}\",1]", s.replace(&token, "***"));
            assert_eq!(scrub(&format!("[\"{s}\",1]"), &token), expected);
        }
    }

    #[test]
    fn a_64_kib_token_and_a_large_body() {
        let token = "t".repeat(64 * 1024);
        let body = format!(r#"{{"a":"{}","b":"x{token}x"}}"#, "t".repeat(100));
        assert_eq!(
            scrub(&body, &token),
            format!(r#"{{"a":"{}","b":"x***x"}}"#, "t".repeat(100))
        );
    }
}
