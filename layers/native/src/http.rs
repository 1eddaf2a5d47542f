//! HTTP/1.x requests and responses paired into rows: a port of freezeframe.dissect.http (header sections decoded as
//! latin-1, RFC 9112 framing, FIFO pairing per connection).

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::apps::AppStats;
use crate::store::Chunked;

const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body,
    ChunkSize,
    ChunkData,
    Trailers,
    UntilClose,
    Dead,
}

/// The header fields the framing and the rows read (`HttpConnection::head`, `Row::extra`), by their index in
/// READ_FIELDS: each value as the reference's field map holds it (repeated fields joined by ", ", continuation lines
/// by " "); the other fields are checked for form but not kept.
type Fields<'a> = [Option<Cow<'a, str>>; 5];
const HOST: usize = 0;
const USER_AGENT: usize = 1;
const CONTENT_TYPE: usize = 2;
const TRANSFER_ENCODING: usize = 3;
const CONTENT_LENGTH: usize = 4;
const READ_FIELDS: [&str; 5] = ["host", "user-agent", "content-type", "transfer-encoding", "content-length"];

/// A side's buffer gives its memory back once everything in it is consumed (most connections end that way, and
/// every connection's state is kept until the tables are built).
pub fn release(buffer: &mut Vec<u8>) {
    if buffer.is_empty() && buffer.capacity() != 0 {
        *buffer = Vec::new();
    }
}

/// A head section as latin-1 text: borrowed when it is ASCII (its own latin-1 and UTF-8), the common case.
fn latin1(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if bytes.is_ascii() {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return std::borrow::Cow::Borrowed(text);
        }
    }
    std::borrow::Cow::Owned(bytes.iter().map(|&b| b as char).collect())
}

fn is_ws_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// `text.strip(" \t\n\r\x0b\x0c")`: the characters stripped are ASCII, and a non-ASCII character's UTF-8 bytes
/// are all above 0x7f, so stripping bytes stops at the same characters.
fn trim_ws(text: &str) -> &str {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|&b| !is_ws_byte(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !is_ws_byte(b)).map_or(start, |p| p + 1);
    &text[start..end.max(start)]
}

/// Python's str.isspace() on latin-1 text.
fn is_py_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\x1f' | '\u{85}' | '\u{a0}')
}

fn py_lower(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    text.chars().flat_map(char::to_lowercase).collect()
}

/// The field's index in READ_FIELDS when its name lower-cases (as `py_lower`) to one of them, without lower-casing
/// (and allocating) every name: a non-ASCII latin-1 character lower-cases to a non-ASCII one, so only an ASCII match
/// can equal one of them.
fn read_field(name: &str) -> Option<usize> {
    READ_FIELDS.iter().position(|wanted| name.eq_ignore_ascii_case(wanted))
}

/// A field's value borrows the head's text until a repeated field or a continuation line joins values.
fn fields<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Fields<'a>> {
    let mut fields: Fields<'a> = Default::default();
    // The field the last line belonged to: Some(None) when it is not kept (a continuation line is then dropped).
    let mut last: Option<Option<usize>> = None;
    for line in lines {
        let bytes = line.as_bytes();
        let Some(&first) = bytes.first() else { continue };
        if first == b' ' || first == b'\t' {
            let Some(index) = last? else { continue };
            let value = fields[index].get_or_insert_with(Cow::default).to_mut();
            value.push(' ');
            value.push_str(trim_ws(line));
            continue;
        }
        // ':' is ASCII: its byte position is a character boundary.
        let colon = find_byte(bytes, b':')?;
        if colon == 0 || is_ws_byte(bytes[colon - 1]) {
            return None;
        }
        let Some(index) = read_field(&line[..colon]) else {
            last = Some(None);
            continue;
        };
        let text = trim_ws(&line[colon + 1..]);
        match &mut fields[index] {
            Some(value) => {
                let value = value.to_mut();
                value.push_str(", ");
                value.push_str(text);
            }
            None => fields[index] = Some(Cow::Borrowed(text)),
        }
        last = Some(Some(index));
    }
    Some(fields)
}

pub struct Head<'a> {
    is_request: bool,
    first: &'a str,
    second: &'a str,
    third: &'a str,
    fields: Fields<'a>,
}

/// `text.split("\r\n")`, without the general substring searcher: CR and LF are ASCII, so every match is at a char
/// boundary.
fn crlf_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match find(current.as_bytes(), b"\r\n") {
            Some(at) => {
                rest = Some(&current[at + 2..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// `text.split_once(' ')`, found a word at a time (a space is ASCII: its byte position is a character boundary).
fn split_space(text: &str) -> Option<(&str, &str)> {
    find_byte(text.as_bytes(), b' ').map(|at| (&text[..at], &text[at + 1..]))
}

fn head_section(text: &str) -> Option<Head<'_>> {
    let mut lines = crlf_lines(text);
    let start = lines.next().unwrap_or("");
    let fields = fields(lines)?;
    if start.starts_with("HTTP/") {
        let (version, rest) = split_space(start).unwrap_or((start, ""));
        let (code, reason) = split_space(rest).unwrap_or((rest, ""));
        // Three ASCII digits are three characters; anything else is not a status code.
        if code.len() != 3 || !code.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        return Some(Head { is_request: false, first: version, second: code, third: reason, fields });
    }
    // Exactly three parts split on spaces.
    let (method, rest) = split_space(start)?;
    let (target, version) = split_space(rest)?;
    if find_byte(version.as_bytes(), b' ').is_some() {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|c| c.is_ascii_alphabetic()) || !version.starts_with("HTTP/") {
        return None;
    }
    Some(Head { is_request: true, first: method, second: target, third: version, fields })
}

pub struct Row {
    pub ts_ns: i64,
    pub flow: u32,
    pub client_outbound: bool,
    pub method: Span,
    pub request_target: Span,
    pub http_version: Span,
    /// Only the header fields a row reports: a row of every request lives until the tables are built, and its other
    /// header fields would be most of the engine's memory.
    pub host: Option<Span>,
    pub user_agent: Option<Span>,
    pub request_content_type: Option<Span>,
    pub status_code: Option<i32>,
    pub reason_phrase: Option<Span>,
    pub response_content_type: Option<Span>,
    pub response_ts_ns: Option<i64>,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub response_complete: bool,
}

pub struct RowOut<'a> {
    pub host: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

impl Row {
    /// `texts`: the tracker's `HttpTracker::texts`, where the row's spans are.
    pub fn extra<'a>(&self, texts: &'a str) -> RowOut<'a> {
        let text = |span: Option<Span>| span.map(|s| s.of(texts));
        // The response's content type when it has a non-empty one (a response sets status_code), else the request's.
        let content_type = match text(self.response_content_type) {
            Some(v) if self.status_code.is_some() && !v.is_empty() => Some(v),
            _ => text(self.request_content_type),
        };
        RowOut { host: text(self.host), user_agent: text(self.user_agent), content_type }
    }
}

/// A row's text: where it is in the tracker's `texts`. Every row's texts are appended to one string instead of each
/// being a String of its own: seven allocations (and frees) fewer per request and response.
#[derive(Clone, Copy)]
pub struct Span {
    start: usize,
    end: usize,
}

impl Span {
    pub fn of(self, texts: &str) -> &str {
        &texts[self.start..self.end]
    }
}

struct Side {
    buffer: Vec<u8>,
    state: State,
    remaining: u128,
    start_ts: i64,
    row: Option<usize>,
    declared: i128,
    seen: i64,
}

impl Side {
    fn new() -> Side {
        Side { buffer: Vec::new(), state: State::Head, remaining: 0, start_ts: -1, row: None, declared: -1, seen: 0 }
    }
}

/// A side's state, row, declared length and bytes seen.
type SideState = (State, Option<usize>, i128, i64);

#[derive(Default)]
pub struct HttpTracker {
    pub rows: Chunked<Row>,
    /// The rows' texts, one after the other (`Span`).
    pub texts: String,
    /// Per connection: (from_client side, from_server side) states needed at finish.
    open_sides: Vec<[SideState; 2]>,
}

impl HttpTracker {
    fn keep(&mut self, text: &str) -> Span {
        let start = self.texts.len();
        self.texts.push_str(text);
        Span { start, end: self.texts.len() }
    }

    pub fn open(&mut self) -> usize {
        self.open_sides.push([(State::Head, None, -1, 0); 2]);
        self.open_sides.len() - 1
    }

    /// Bodies cut short by the end of the capture: bytes seen so far.
    pub fn finish(&mut self) {
        for sides in &self.open_sides {
            for (i, (state, row, declared, seen)) in sides.iter().enumerate() {
                if let Some(row) = row {
                    if matches!(state, State::Body | State::ChunkSize | State::ChunkData | State::Trailers) {
                        let size = if *declared >= 0 { *declared as i64 } else { *seen };
                        if i == 0 {
                            self.rows[*row].request_bytes = size;
                        } else {
                            self.rows[*row].response_bytes = size;
                        }
                    }
                }
            }
        }
    }
}

pub struct HttpConnection {
    id: usize,
    pending: VecDeque<usize>,
    from_client: Side,
    from_server: Side,
}

/// Python's int(text, 16) on bytes already stripped of ASCII whitespace; None when it raises ValueError.
fn parse_hex(text: &[u8]) -> Option<i128> {
    let t: Vec<u8> = {
        // int() also strips whitespace itself (ASCII whitespace for bytes).
        let s = text.iter().position(|b| !b" \t\n\r\x0b\x0c".contains(b)).unwrap_or(text.len());
        let e = text.iter().rposition(|b| !b" \t\n\r\x0b\x0c".contains(b)).map_or(s, |p| p + 1);
        text[s..e.max(s)].to_vec()
    };
    let mut i = 0;
    let mut negative = false;
    if i < t.len() && (t[i] == b'+' || t[i] == b'-') {
        negative = t[i] == b'-';
        i += 1;
    }
    let mut prefixed = false;
    if i + 1 < t.len() && t[i] == b'0' && (t[i + 1] == b'x' || t[i + 1] == b'X') {
        i += 2;
        prefixed = true;
    }
    let digits = &t[i..];
    if digits.is_empty() {
        return None;
    }
    let mut value: i128 = 0;
    let mut previous_underscore = !prefixed; // an underscore may follow the prefix, not start the number
    for (k, &c) in digits.iter().enumerate() {
        if c == b'_' {
            if previous_underscore || k + 1 == digits.len() {
                return None;
            }
            previous_underscore = true;
            continue;
        }
        let d = (c as char).to_digit(16)? as i128;
        value = value.saturating_mul(16).saturating_add(d);
        previous_underscore = false;
    }
    Some(if negative { -value } else { value })
}

impl HttpConnection {
    pub fn new(id: usize) -> HttpConnection {
        HttpConnection { id, pending: VecDeque::new(), from_client: Side::new(), from_server: Side::new() }
    }

    fn sync(&self, tracker: &mut HttpTracker) {
        let c = &self.from_client;
        let s = &self.from_server;
        tracker.open_sides[self.id] = [(c.state, c.row, c.declared, c.seen), (s.state, s.row, s.declared, s.seen)];
    }

    #[allow(clippy::too_many_arguments)]
    pub fn data(&mut self, tracker: &mut HttpTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
                from_client: bool, ts_ns: i64, chunk: &[u8]) {
        self.feed(tracker, stats, flow, client_outbound, from_client, ts_ns, chunk);
        release(&mut self.from_client.buffer);
        release(&mut self.from_server.buffer);
        self.sync(tracker);
    }

    #[allow(clippy::too_many_arguments)]
    fn feed(&mut self, tracker: &mut HttpTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
            from_client: bool, ts_ns: i64, chunk: &[u8]) {
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        if side.state == State::Dead {
            return;
        }
        // The side's bytes are parsed in place: from the segment itself when nothing is left over from the previous
        // one (bodies and whole heads, most segments), and only what is left unparsed is copied into the buffer.
        let mut stored = std::mem::take(&mut side.buffer);
        let in_place = stored.is_empty();
        if !in_place {
            stored.extend_from_slice(chunk);
        }
        let data: &[u8] = if in_place { chunk } else { &stored };
        let used = self.consume(tracker, stats, flow, client_outbound, from_client, ts_ns, data);
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        if side.state == State::Dead {
            return; // malformed or upgraded: the rest of the side is not read
        }
        if in_place {
            if used < chunk.len() {
                side.buffer = chunk[used..].to_vec();
            }
        } else {
            stored.drain(..used);
            side.buffer = stored;
        }
    }

    /// Parses `data` (what is buffered of the side, then the new segment) as far as it goes: the bytes used.
    #[allow(clippy::too_many_arguments)]
    fn consume(&mut self, tracker: &mut HttpTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
               from_client: bool, ts_ns: i64, data: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            let side = if from_client { &mut self.from_client } else { &mut self.from_server };
            let rest = &data[pos..];
            match side.state {
                State::Head => {
                    if rest.is_empty() {
                        return pos;
                    }
                    let skip = rest.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(rest.len());
                    pos += skip;
                    let rest = &data[pos..];
                    if rest.is_empty() {
                        return pos;
                    }
                    if side.start_ts < 0 {
                        side.start_ts = ts_ns;
                    }
                    let Some(end) = find(rest, b"\r\n\r\n") else {
                        if rest.len() > MAX_HEADER_BYTES {
                            malformed(side, stats);
                        }
                        return pos;
                    };
                    let text = latin1(&rest[..end]);
                    let section = head_section(&text);
                    pos += end + 4;
                    match section {
                        Some(section) if section.is_request == from_client => {
                            self.head(tracker, stats, flow, client_outbound, from_client, section);
                            let side = if from_client { &mut self.from_client } else { &mut self.from_server };
                            side.start_ts = -1;
                        }
                        _ => {
                            malformed(side, stats);
                            return pos;
                        }
                    }
                }
                State::Body => {
                    let take = side.remaining.min(rest.len() as u128) as usize;
                    side.seen += take as i64;
                    side.remaining -= take as u128;
                    pos += take;
                    if side.remaining != 0 {
                        return pos;
                    }
                    self.complete(tracker, from_client);
                }
                State::ChunkSize | State::Trailers => {
                    let Some(end) = find(rest, b"\r\n") else {
                        if rest.len() > MAX_HEADER_BYTES {
                            malformed(side, stats);
                        }
                        return pos;
                    };
                    let line = &rest[..end];
                    pos += end + 2;
                    if side.state == State::Trailers {
                        if line.is_empty() {
                            self.complete(tracker, from_client);
                        }
                        continue;
                    }
                    let size_text = match line.iter().position(|b| *b == b';') {
                        Some(p) => &line[..p],
                        None => line,
                    };
                    let stripped = strip_ascii(size_text);
                    let Some(size) = parse_hex(stripped) else {
                        malformed(side, stats);
                        return pos;
                    };
                    if size < 0 {
                        malformed(side, stats);
                        return pos;
                    }
                    if size == 0 {
                        side.state = State::Trailers;
                    } else {
                        side.state = State::ChunkData;
                        side.remaining = size as u128 + 2;
                    }
                }
                State::ChunkData => {
                    let take = side.remaining.min(rest.len() as u128);
                    let body = take.min(side.remaining.saturating_sub(2));
                    side.seen += body as i64;
                    side.remaining -= take;
                    pos += take as usize;
                    if side.remaining != 0 {
                        return pos;
                    }
                    side.state = State::ChunkSize;
                }
                State::UntilClose => {
                    side.seen += rest.len() as i64;
                    self.account(tracker, from_client);
                    return data.len();
                }
                State::Dead => return pos,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn head(&mut self, tracker: &mut HttpTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
            from_client: bool, section: Head) {
        let Head { is_request, first, second, third, fields } = section;
        let chunked = fields[TRANSFER_ENCODING].as_deref().is_some_and(|c| py_lower(c).contains("chunked"));
        let text = match fields[CONTENT_LENGTH].as_deref() {
            Some(text) if !text.is_empty() => text.split(',').next().unwrap_or("").trim_matches(is_py_space),
            _ => "",
        };
        if !text.is_empty() && !text.chars().all(|c| c.is_ascii_digit()) {
            let side = if from_client { &mut self.from_client } else { &mut self.from_server };
            malformed(side, stats);
            return;
        }
        let declared: i128 = if text.is_empty() {
            -1
        } else if text.len() <= 18 {
            digits_value(text) as i128 // ASCII digits (checked above): up to 18 cannot overflow 64 bits
        } else {
            text.parse::<i128>().unwrap_or(i128::MAX)
        };
        let row: Option<usize>;
        let has_body;
        let until_close;
        if is_request {
            stats.http_requests += 1;
            let side = &self.from_client;
            let index = tracker.rows.len();
            let (method, request_target, http_version) = (tracker.keep(first), tracker.keep(second), tracker.keep(third));
            let mut keep = |field: &Option<Cow<'_, str>>| field.as_deref().map(|v| tracker.keep(v));
            let (host, user_agent, request_content_type) =
                (keep(&fields[HOST]), keep(&fields[USER_AGENT]), keep(&fields[CONTENT_TYPE]));
            tracker.rows.push(Row {
                ts_ns: side.start_ts, flow, client_outbound, method, request_target, http_version, host,
                user_agent, request_content_type,
                status_code: None, reason_phrase: None, response_content_type: None, response_ts_ns: None,
                request_bytes: 0, response_bytes: 0,
                response_complete: false,
            });
            self.pending.push_back(index);
            row = Some(index);
            has_body = chunked || declared > 0;
            until_close = false;
        } else {
            let status = digits_value(second) as i32; // three ASCII digits (head_section)
            if (100..200).contains(&status) && status != 101 {
                return;
            }
            row = self.pending.pop_front();
            match row {
                None => stats.http_unmatched_responses += 1,
                Some(index) => {
                    let reason_phrase = Some(tracker.keep(third));
                    let response_content_type = fields[CONTENT_TYPE].as_deref().map(|v| tracker.keep(v));
                    let r = &mut tracker.rows[index];
                    r.status_code = Some(status);
                    r.reason_phrase = reason_phrase;
                    r.response_content_type = response_content_type;
                    r.response_ts_ns = Some(self.from_server.start_ts);
                }
            }
            let method_is = |m: &str| row.is_some_and(|i| tracker.rows[i].method.of(&tracker.texts) == m);
            if status == 101 || (method_is("CONNECT") && (200..300).contains(&status)) {
                if let Some(index) = row {
                    tracker.rows[index].response_complete = true;
                }
                for side in [&mut self.from_client, &mut self.from_server] {
                    side.state = State::Dead;
                    side.buffer.clear();
                }
                return;
            }
            let no_body = status == 204 || status == 304 || method_is("HEAD");
            has_body = !no_body && (chunked || declared != 0);
            until_close = has_body && !chunked && declared < 0;
        }
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        side.row = row;
        side.declared = declared;
        side.seen = 0;
        if !has_body {
            self.complete(tracker, from_client);
        } else if chunked {
            side.state = State::ChunkSize;
            side.declared = -1;
        } else if until_close {
            side.state = State::UntilClose;
        } else {
            side.state = State::Body;
            side.remaining = declared as u128;
        }
    }

    fn account(&mut self, tracker: &mut HttpTracker, from_client: bool) {
        let side = if from_client { &self.from_client } else { &self.from_server };
        let Some(row) = side.row else { return };
        let size = if side.declared >= 0 { side.declared as i64 } else { side.seen };
        if from_client {
            tracker.rows[row].request_bytes = size;
        } else {
            tracker.rows[row].response_bytes = size;
        }
    }

    fn complete(&mut self, tracker: &mut HttpTracker, from_client: bool) {
        self.account(tracker, from_client);
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        if let Some(row) = side.row {
            if !from_client {
                tracker.rows[row].response_complete = true;
            }
        }
        side.state = State::Head;
        side.row = None;
        side.declared = -1;
        side.seen = 0;
    }
}

fn malformed(side: &mut Side, stats: &mut AppStats) {
    stats.http_malformed += 1;
    side.state = State::Dead;
    side.buffer.clear();
}

fn strip_ascii(text: &[u8]) -> &[u8] {
    let ws = b" \t\n\r\x0b\x0c";
    let s = text.iter().position(|b| !ws.contains(b)).unwrap_or(text.len());
    let e = text.iter().rposition(|b| !ws.contains(b)).map_or(s, |p| p + 1);
    &text[s..e.max(s)]
}

/// The first occurrence of a non-empty `needle`: jumps between its first byte's occurrences. The needle's length is
/// a constant, so a candidate is compared as one word instead of through memcmp.
fn find<const N: usize>(haystack: &[u8], needle: &[u8; N]) -> Option<usize> {
    let first = needle[0];
    let mut from = 0;
    while from + N <= haystack.len() {
        let at = from + find_byte(&haystack[from..=haystack.len() - N], first)?;
        if haystack[at..at + N] == needle[..] {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The value of a text of at most 18 ASCII digits (what `parse` gives for it).
fn digits_value(text: &str) -> u64 {
    text.bytes().fold(0, |value, digit| value * 10 + (digit - b'0') as u64)
}

/// The first `byte` in `haystack`, eight bytes at a time (a head's lines and its end are found by their CR).
fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = LOW * byte as u64;
    let mut chunks = haystack.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6],
                                       chunk[7]]) ^ pattern;
        // A zero byte of `word` is a match. The lowest flagged byte is always a true zero (a false flag needs a borrow
        // from a zero byte below it), and little-endian order puts the first byte in memory lowest.
        let found = word.wrapping_sub(LOW) & !word & HIGH;
        if found != 0 {
            return Some(base + (found.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|&b| b == byte).map(|at| base + at)
}

#[cfg(test)]
mod tests {
    use super::{digits_value, find, find_byte};

    #[test]
    fn find_byte_equals_a_byte_by_byte_scan() {
        // Every length up to three words, the byte at every position, among neighbours that trip the word trick
        // (zero, 0x80, the byte plus or minus one) and a second occurrence after it.
        for needle in [0u8, 1, b'\r', b':', 0x7f, 0x80, 0xff] {
            for len in 0..24 {
                for at in 0..=len {
                    for filler in [0u8, 0x80, needle.wrapping_add(1), needle.wrapping_sub(1), 0xff] {
                        if filler == needle {
                            continue;
                        }
                        let mut haystack = vec![filler; len];
                        if at < len {
                            haystack[at] = needle;
                            if at + 3 < len {
                                haystack[at + 3] = needle;
                            }
                        }
                        let expected = haystack.iter().position(|&b| b == needle);
                        assert_eq!(find_byte(&haystack, needle), expected, "{needle} {len} {at} {filler}");
                    }
                }
            }
        }
    }

    #[test]
    fn find_equals_the_windows_scan() {
        // Heads' pieces where CR, LF and their pairs come in every arrangement, CRLFCRLF overlapping a lone CR.
        let pieces: [&[u8]; 6] = [b"\r", b"\n", b"\r\n", b"a", b"\r\r\n\r\n", b"\n\r"];
        let mut haystacks: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = haystacks.iter()
                .flat_map(|h| pieces.iter().map(move |p| [h.as_slice(), p].concat())).collect();
            haystacks.extend(longer);
        }
        for haystack in &haystacks {
            let naive = |needle: &[u8]| haystack.windows(needle.len()).position(|w| w == needle);
            assert_eq!(find(haystack, b"\r\n"), naive(b"\r\n"), "{haystack:?}");
            assert_eq!(find(haystack, b"\r\n\r\n"), naive(b"\r\n\r\n"), "{haystack:?}");
        }
    }

    #[test]
    fn digits_value_equals_parse() {
        for text in ["0", "7", "00", "042", "200", "65535", "4294967296", "999999999999999999", "000000000000000001"] {
            assert_eq!(digits_value(text) as i128, text.parse::<i128>().unwrap(), "{text}");
        }
    }
}
