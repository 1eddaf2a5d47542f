//! DNS messages (RFC 1035 4.1, AAAA from RFC 3596) paired into rows: a port of freezeframe.dissect.dns.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::apps::AppStats;
use crate::store::Chunked;

const MAX_POINTER_HOPS: u32 = 64;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;

pub fn type_name(qtype: u16) -> Cow<'static, str> {
    let name = match qtype {
        1 => "A", 2 => "NS", 5 => "CNAME", 6 => "SOA", 12 => "PTR", 13 => "HINFO", 15 => "MX", 16 => "TXT",
        28 => "AAAA", 33 => "SRV", 35 => "NAPTR", 39 => "DNAME", 41 => "OPT", 43 => "DS", 46 => "RRSIG",
        47 => "NSEC", 48 => "DNSKEY", 64 => "SVCB", 65 => "HTTPS", 99 => "SPF", 252 => "AXFR", 255 => "ANY",
        257 => "CAA",
        _ => return Cow::Owned(format!("TYPE{qtype}")),
    };
    Cow::Borrowed(name)
}

pub fn rcode_name(rcode: u16) -> Cow<'static, str> {
    let name = match rcode {
        0 => "NOERROR", 1 => "FORMERR", 2 => "SERVFAIL", 3 => "NXDOMAIN", 4 => "NOTIMP", 5 => "REFUSED",
        6 => "YXDOMAIN", 7 => "YXRRSET", 8 => "NXRRSET", 9 => "NOTAUTH", 10 => "NOTZONE",
        _ => return Cow::Owned(format!("RCODE{rcode}")),
    };
    Cow::Borrowed(name)
}

/// ASCII with Python's backslashreplace: bytes >= 0x80 become \xNN.
pub fn ascii_backslash(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b < 0x80 {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// UTF-8 with Python's backslashreplace.
pub fn utf8_backslash(mut bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(std::str::from_utf8(&bytes[..valid]).unwrap_or(""));
                let bad = e.error_len().unwrap_or(bytes.len() - valid);
                for b in &bytes[valid..valid + bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                bytes = &bytes[valid + bad..];
            }
        }
    }
}

#[inline]
fn be16(m: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([m[at], m[at + 1]])
}

/// Name at ``offset``: text, offset after it in the original position, whether it followed a pointer.
fn name(message: &[u8], mut offset: usize) -> Option<(String, usize, bool)> {
    let mut joined: Vec<u8> = Vec::with_capacity(64);
    let mut first = true;
    let mut end: Option<usize> = None;
    let mut hops = 0;
    let size = message.len();
    loop {
        if offset >= size {
            return None;
        }
        let length = message[offset] as usize;
        if length == 0 {
            offset += 1;
            break;
        }
        if length < 0x40 {
            if offset + 1 + length > size {
                return None;
            }
            offset += 1 + length;
            if !first {
                joined.push(b'.');
            }
            first = false;
            joined.extend_from_slice(&message[offset - length..offset]);
            continue;
        }
        if length < 0xC0 {
            return None;
        }
        if offset + 2 > size {
            return None;
        }
        hops += 1;
        if hops > MAX_POINTER_HOPS {
            return None;
        }
        if end.is_none() {
            end = Some(offset + 2);
        }
        offset = (be16(message, offset) & 0x3FFF) as usize;
    }
    // An ASCII name (nearly all of them) is its own text: no second copy.
    let text = if joined.is_ascii() { String::from_utf8(joined).unwrap_or_default() } else { ascii_backslash(&joined) };
    Some((text, end.unwrap_or(offset), end.is_some()))
}

fn rdata(message: &[u8], rtype: u16, start: usize, length: usize) -> Option<String> {
    let raw = &message[start..start + length];
    match rtype {
        1 if length == 4 => return Some(crate::decode::ipv4_text([raw[0], raw[1], raw[2], raw[3]])),
        28 if length == 16 => {
            let mut addr = [0u8; 16];
            addr.copy_from_slice(raw);
            return Some(crate::decode::ip_text(true, &addr));
        }
        2 | 5 | 12 | 39 => return name(message, start).map(|n| n.0),
        15 if length >= 3 => {
            let n = name(message, start + 2)?;
            return Some(format!("{} {}", be16(message, start), n.0));
        }
        16 => {
            let mut strings = Vec::new();
            let mut position = 0;
            while position < length {
                let size = raw[position] as usize;
                let from = (position + 1).min(length);
                let to = (position + 1 + size).min(length);
                strings.push(format!("\"{}\"", utf8_backslash(&raw[from..to])));
                position += 1 + size;
            }
            return Some(strings.join(" "));
        }
        _ => {}
    }
    Some(crate::reader::hex(raw))
}

pub struct Answer {
    pub ttl: i64,
    pub rdata: String,
}

pub struct Fields {
    pub ident: u16,
    pub flags: u16,
    pub qname: String,
    pub qtype: u16,
    pub answers: Vec<Answer>,
}

pub fn fields(message: &[u8]) -> Option<Fields> {
    let size = message.len();
    if size < 12 {
        return None;
    }
    let ident = be16(message, 0);
    let flags = be16(message, 2);
    let qdcount = be16(message, 4);
    let ancount = be16(message, 6);
    if qdcount == 0 {
        return None;
    }
    let (qname, mut offset, compressed_question) = name(message, 12)?;
    if offset + 4 > size {
        return None;
    }
    let question_wire: &[u8] = if ancount != 0 { &message[12..offset] } else { b"" };
    let qtype = be16(message, offset);
    offset += 4;
    for _ in 0..qdcount.saturating_sub(1) {
        let skipped = name(message, offset)?;
        offset = skipped.1 + 4;
    }
    let mut answers = Vec::with_capacity(ancount as usize);
    for _ in 0..ancount {
        if offset <= size && message[offset..].starts_with(question_wire) {
            offset += question_wire.len();
        } else if !compressed_question && offset <= size && message[offset..].starts_with(b"\xc0\x0c") {
            offset += 2;
        } else {
            let owner = name(message, offset)?;
            offset = owner.1;
        }
        if offset + 10 > size {
            return None;
        }
        let rtype = be16(message, offset);
        let ttl = u32::from_be_bytes([message[offset + 4], message[offset + 5], message[offset + 6],
                                      message[offset + 7]]) as i64;
        let rdlength = be16(message, offset + 8) as usize;
        offset += 10;
        if offset + rdlength > size {
            return None;
        }
        let text = rdata(message, rtype, offset, rdlength)?;
        answers.push(Answer { ttl, rdata: text });
        offset += rdlength;
    }
    Some(Fields { ident, flags, qname, qtype, answers })
}

pub struct Row {
    pub ts_ns: i64,
    pub flow: u32,
    pub client_outbound: bool,
    pub transport: &'static str,
    pub answered_query: bool,
    pub transaction_id: u16,
    pub qname: String,
    pub qtype: u16,
    pub truncated: bool,
    pub rcode: Option<u16>,
    pub answers: Vec<Answer>,
    pub response_ts_ns: Option<i64>,
}

impl Row {
    fn respond(&mut self, ts_ns: i64, response: Fields) {
        self.truncated = response.flags & FLAG_TC != 0;
        self.rcode = Some(response.flags & 0xF);
        self.answers = response.answers;
        self.response_ts_ns = Some(ts_ns);
    }
}

/// The queries (row indexes) waiting under one (flow, client side, transaction id), in arrival order: nearly always
/// one, kept without an allocation of its own.
enum Waiting {
    One(usize),
    Many(Vec<usize>),
}

#[derive(Default)]
pub struct DnsTracker {
    pub rows: Chunked<Row>,
    /// A response answers the first waiting query with its name (ASCII case-insensitively: the names are ASCII
    /// text, compared lower-cased by the reference).
    pending: FxHashMap<(u32, bool, u16), Waiting>,
}

impl DnsTracker {
    pub fn message(&mut self, stats: &mut AppStats, flow: u32, outbound: bool, ts_ns: i64, payload: &[u8],
                   transport: &'static str) {
        stats.dns_messages += 1;
        let Some(message) = fields(payload) else {
            stats.dns_malformed += 1;
            return;
        };
        let is_response = message.flags & FLAG_QR != 0;
        let client_outbound = outbound != is_response;
        let key = (flow, client_outbound, message.ident);
        if !is_response {
            let index = self.rows.len();
            self.rows.push(Row { ts_ns, flow, client_outbound, transport, answered_query: false,
                                 transaction_id: message.ident, truncated: message.flags & FLAG_TC != 0,
                                 qname: message.qname, qtype: message.qtype, rcode: None, answers: Vec::new(),
                                 response_ts_ns: None });
            match self.pending.entry(key) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Waiting::One(index));
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => match slot.get_mut() {
                    Waiting::One(first) => {
                        let first = *first;
                        slot.insert(Waiting::Many(vec![first, index]));
                    }
                    Waiting::Many(list) => list.push(index),
                },
            }
            return;
        }
        if let Some(waiting) = self.pending.get_mut(&key) {
            let rows = &self.rows;
            let same_name = |index: &usize| rows[*index].qname.eq_ignore_ascii_case(&message.qname);
            let (found, emptied) = match waiting {
                Waiting::One(index) => (same_name(index).then_some(*index), true),
                Waiting::Many(list) => match list.iter().position(same_name) {
                    Some(at) => (Some(list.remove(at)), list.is_empty()),
                    None => (None, false),
                },
            };
            if let Some(index) = found {
                if emptied {
                    self.pending.remove(&key);
                }
                let row = &mut self.rows[index];
                row.answered_query = true;
                row.respond(ts_ns, message);
                return;
            }
        }
        stats.dns_unmatched_responses += 1;
        let mut row = Row { ts_ns, flow, client_outbound, transport, answered_query: false,
                            transaction_id: message.ident, truncated: false, qname: String::new(),
                            qtype: message.qtype, rcode: None, answers: Vec::new(), response_ts_ns: None };
        row.qname = message.qname.clone();
        row.respond(ts_ns, message);
        self.rows.push(row);
    }
}

/// One TCP DNS connection split into messages by the two-byte length prefix (RFC 1035 4.2.2).
#[derive(Default)]
pub struct DnsStream {
    buffers: [Vec<u8>; 2],
}

impl DnsStream {
    #[allow(clippy::too_many_arguments)]
    pub fn data(&mut self, tracker: &mut DnsTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
                from_client: bool, ts_ns: i64, chunk: &[u8]) {
        let buffer = &mut self.buffers[from_client as usize];
        buffer.extend_from_slice(chunk);
        let mut start = 0;
        while buffer.len() - start >= 2 {
            let size = be16(buffer, start) as usize;
            if buffer.len() - start < 2 + size {
                break;
            }
            let outbound = from_client == client_outbound;
            tracker.message(stats, flow, outbound, ts_ns, &buffer[start + 2..start + 2 + size], "tcp");
            start += 2 + size;
        }
        buffer.drain(..start);
        crate::http::release(buffer);
    }
}
