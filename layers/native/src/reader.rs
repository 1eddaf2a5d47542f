//! Capture reading: classic pcap (µs and ns, both byte orders) and pcapng (sections, interfaces with their own
//! time resolution and offset, EPB, SPB and the obsolete packet block), zstd or not.
//!
//! A port of freezeframe.pcapio's dissection readers (``open_capture``) with the same judgements: the same
//! problems (kind, count, first offset, first packet, message) and the same resynchronisation after damage. The
//! Python reader streams in chunks; this one works on the whole (decompressed) segment, which equals the chunked
//! walk whenever a resynchronisation finds its record within 4 MiB (the Python window), as every real case does.

use std::io::Read;

pub const MAGIC_US: u32 = 0xA1B2_C3D4;
pub const MAGIC_NS: u32 = 0xA1B2_3C4D;
const GLOBAL_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
const MAX_RECORD_LEN: u32 = 262_144;
const MAX_ORIG_LEN: u32 = 1 << 20;
const MAX_BLOCK_LEN: u32 = 16 << 20;
const RESYNC_BLIND_SCAN: usize = 256 << 10;
const MAX_TSRESOL_EXPONENT: u8 = 63;
const MAX_DECIMAL_EXPONENT: u8 = 18;
pub const MAX_TS_NS: i128 = (1i128 << 63) - 1;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 1;
const BLOCK_OPB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_NRB: u32 = 4;
const BLOCK_ISB: u32 = 5;
const BLOCK_EPB: u32 = 6;
const BLOCK_DSB: u32 = 10;

/// One kind of damage: how often, and where it was first seen (pcapio.ReadProblem).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: &'static str,
    pub count: i64,
    pub first_offset: i64,
    pub first_packet: i64,
    pub message: String,
}

/// A stream that is not a capture at all (pcapio's CaptureFormatError).
#[derive(Debug)]
pub struct FormatError(pub String);

#[derive(Default)]
pub struct Problems {
    pub list: Vec<Problem>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, offset: usize, packets: i64, message: String) {
        if let Some(found) = self.list.iter_mut().find(|p| p.kind == kind) {
            found.count += 1;
        } else {
            self.list.push(Problem { kind, count: 1, first_offset: offset as i64, first_packet: packets, message });
        }
    }
}

/// The decompressed bytes of a segment (zstd detected by magic), and a read problem if the zstd stream broke.
pub fn decompress(raw: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, Option<String>), FormatError> {
    if raw.len() < 4 || raw[..4] != ZSTD_MAGIC {
        return Ok((std::borrow::Cow::Borrowed(raw), None));
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    let mut error = None;
    match zstd::stream::read::Decoder::with_buffer(raw) {
        Ok(mut decoder) => {
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                match decoder.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        Err(e) => error = Some(e.to_string()),
    }
    if out.len() < 4 {
        if let Some(e) = error {
            return Err(FormatError(format!("zstd stream is corrupt before the capture header: {e}")));
        }
    }
    Ok((std::borrow::Cow::Owned(out), error))
}

/// What the reader hands out: one packet with its link type.
pub struct Packet<'a> {
    pub link_type: u32,
    pub ts_ns: i64,
    pub orig_len: i64,
    pub data: &'a [u8],
}

#[inline]
fn u16_at(buf: &[u8], pos: usize, le: bool) -> u16 {
    let b = [buf[pos], buf[pos + 1]];
    if le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) }
}

#[inline]
fn u32_at(buf: &[u8], pos: usize, le: bool) -> u32 {
    let b = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
    if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
}

/// Reads a whole decompressed capture, calling ``sink`` per packet in capture order. ``zstd_error`` is the
/// decompression failure (if any), reported at the end of what could be decompressed, as pcapio does.
pub fn read_capture<F: FnMut(Packet<'_>)>(buf: &[u8], zstd_error: Option<String>, sink: F)
                                          -> Result<Problems, FormatError> {
    let mut problems = Problems::default();
    if buf.len() < 4 {
        if let Some(e) = &zstd_error {
            return Err(FormatError(format!("zstd stream is corrupt before the capture header: {e}")));
        }
        return Err(FormatError(format!("capture stream too short for a magic number ({} bytes)", buf.len())));
    }
    let zstd_note = |problems: &mut Problems, packets: i64| {
        if let Some(e) = &zstd_error {
            problems.add("zstd_corrupt", buf.len(), packets, format!("zstd stream is corrupt: {e}"));
        }
    };
    if buf[..4] == PCAPNG_MAGIC {
        if buf.len() < 28 || section_order(buf, 0).is_none() {
            return Err(FormatError("pcapng section header block is truncated or has no byte-order magic".into()));
        }
        let packets = read_pcapng(buf, &mut problems, sink, &zstd_note);
        let _ = packets;
        return Ok(problems);
    }
    let magic_le = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let magic_be = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let le = if magic_le == MAGIC_US || magic_le == MAGIC_NS {
        true
    } else if magic_be == MAGIC_US || magic_be == MAGIC_NS {
        false
    } else {
        return Err(FormatError(format!("not a pcap or pcapng stream (magic {})", hex(&buf[..4]))));
    };
    if buf.len() < GLOBAL_HEADER_LEN {
        return Err(FormatError(format!("pcap global header truncated: {} of {} bytes", buf.len(),
                                       GLOBAL_HEADER_LEN)));
    }
    let magic = u32_at(buf, 0, le);
    let nanosecond = magic == MAGIC_NS;
    let link_type = u32_at(buf, 20, le) & 0xFFFF;
    read_pcap(buf, le, nanosecond, link_type, &mut problems, sink, &zstd_note);
    Ok(problems)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 0xF) as usize]);
    }
    String::from_utf8(out).unwrap_or_default() // hex digits: always UTF-8
}

struct PcapState {
    le: bool,
    frac_limit: u32,
    last_sec: Option<u32>,
}

impl PcapState {
    fn plausible(&self, buf: &[u8], pos: usize) -> Option<usize> {
        let sec = u32_at(buf, pos, self.le);
        let frac = u32_at(buf, pos + 4, self.le);
        let incl = u32_at(buf, pos + 8, self.le);
        let orig = u32_at(buf, pos + 12, self.le);
        if frac >= self.frac_limit || incl > MAX_RECORD_LEN || !(incl <= orig && orig <= MAX_ORIG_LEN) {
            return None;
        }
        if let Some(last) = self.last_sec {
            if (sec as i64 - last as i64).abs() > 0x20000 {
                return None;
            }
        }
        Some(RECORD_HEADER_LEN + incl as usize)
    }
}

fn read_pcap<F: FnMut(Packet<'_>), Z: Fn(&mut Problems, i64)>(buf: &[u8], le: bool, nanosecond: bool, link_type: u32,
                                                               problems: &mut Problems, mut sink: F, zstd_note: &Z) {
    let size = buf.len();
    let mut state = PcapState { le, frac_limit: if nanosecond { 1_000_000_000 } else { 1_000_000 }, last_sec: None };
    let scale: i64 = if nanosecond { 1 } else { 1000 };
    let mut pos = GLOBAL_HEADER_LEN;
    let mut packets: i64 = 0;
    loop {
        while pos + RECORD_HEADER_LEN <= size {
            // The record header as one array: its four fields are read without a bounds check per byte.
            let header: &[u8; RECORD_HEADER_LEN] =
                buf[pos..pos + RECORD_HEADER_LEN].try_into().expect("the loop condition leaves a whole header");
            let field = |at: usize| {
                let b = [header[at], header[at + 1], header[at + 2], header[at + 3]];
                if le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }
            };
            let (sec, frac, incl, orig) = (field(0), field(4), field(8), field(12));
            let end = pos + RECORD_HEADER_LEN + incl as usize;
            if end > size || incl > MAX_RECORD_LEN || frac >= state.frac_limit || !(incl <= orig && orig <= MAX_ORIG_LEN) {
                break;
            }
            sink(Packet { link_type, ts_ns: sec as i64 * 1_000_000_000 + frac as i64 * scale, orig_len: orig as i64,
                          data: &buf[pos + RECORD_HEADER_LEN..end] });
            state.last_sec = Some(sec);
            packets += 1;
            pos = end;
        }
        // The general path: the record where the fast walk stopped.
        if pos + RECORD_HEADER_LEN > size {
            zstd_note(problems, packets);
            if size > pos {
                problems.add("truncated", pos, packets, "the stream ends inside a record header".into());
            }
            return;
        }
        let sec = u32_at(buf, pos, le);
        let frac = u32_at(buf, pos + 4, le);
        let incl = u32_at(buf, pos + 8, le);
        let orig = u32_at(buf, pos + 12, le);
        if incl > MAX_RECORD_LEN || frac >= state.frac_limit {
            problems.add("bad_record_header", pos, packets,
                         format!("record header with captured length {incl} and fraction {frac}"));
            match pcap_resync(buf, &state, pos, problems, packets) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => {
                    zstd_note(problems, packets);
                    return;
                }
            }
        }
        if pos + RECORD_HEADER_LEN + incl as usize > size {
            zstd_note(problems, packets);
            problems.add("truncated", pos, packets, format!("the stream ends inside a record of {incl} bytes"));
            return;
        }
        // Framed, but the original length is impossible: keep the packet with its captured length.
        problems.add("bad_original_length", pos, packets,
                     format!("original length {orig} with captured length {incl}"));
        let start = pos + RECORD_HEADER_LEN;
        pos = start + incl as usize;
        state.last_sec = Some(sec);
        packets += 1;
        sink(Packet { link_type, ts_ns: sec as i64 * 1_000_000_000 + frac as i64 * scale, orig_len: incl as i64,
                      data: &buf[start..pos] });
    }
}

fn pcap_resync(buf: &[u8], state: &PcapState, start: usize, problems: &mut Problems, packets: i64) -> Option<usize> {
    let size = buf.len();
    let from = start + 1;
    let check = |pos: usize| -> Option<Option<usize>> {
        // Some(Some(pos)): found; Some(None): stop scanning (past the end); None: keep going
        if pos + RECORD_HEADER_LEN > size {
            return Some(None);
        }
        let length = state.plausible(buf, pos)?;
        let after = pos + length;
        if after + RECORD_HEADER_LEN <= size {
            state.plausible(buf, after)?;
        } else if after != size {
            return None;
        }
        Some(Some(pos))
    };
    let mut found = None;
    if let Some(last) = state.last_sec {
        let high = last >> 16;
        let patterns: [u16; 2] = [(high & 0xFFFF) as u16, ((high + 1) & 0xFFFF) as u16];
        let shift = if state.le { 2 } else { 0 };
        let mut at = from + shift;
        while at + 2 <= size {
            let value = u16_at(buf, at, state.le);
            if value == patterns[0] || value == patterns[1] {
                match check(at - shift) {
                    Some(Some(pos)) => {
                        found = Some(pos);
                        break;
                    }
                    Some(None) => break,
                    None => {}
                }
            }
            at += 1;
        }
    } else {
        let end = size.min(from + RESYNC_BLIND_SCAN);
        for pos in from..end {
            match check(pos) {
                Some(Some(p)) => {
                    found = Some(p);
                    break;
                }
                Some(None) => break,
                None => {}
            }
        }
    }
    match found {
        Some(pos) => {
            problems.add("garbage_skipped", start, packets,
                         format!("skipped {} bytes to the next believable record", pos - start));
            Some(pos)
        }
        None => {
            problems.add("unrecoverable", start, packets,
                         "no believable record after a corrupt one; rest ignored".into());
            None
        }
    }
}

fn section_order(buf: &[u8], pos: usize) -> Option<bool> {
    if pos + 12 > buf.len() {
        return None;
    }
    match &buf[pos + 8..pos + 12] {
        [0x4d, 0x3c, 0x2b, 0x1a] => Some(true),
        [0x1a, 0x2b, 0x3c, 0x4d] => Some(false),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Interface {
    link_type: u32,
    snaplen: u32,
    ts_mult: i128,
    ts_div: i128,
    ts_shift: i32,
    ts_offset_ns: i128,
}

impl Interface {
    fn new(link_type: u32, snaplen: u32, tsresol: u8, tsoffset_s: i64) -> Interface {
        let offset = tsoffset_s as i128 * 1_000_000_000;
        if tsresol & 0x80 != 0 {
            return Interface { link_type, snaplen, ts_mult: 1, ts_div: 1, ts_shift: (tsresol & 0x7F) as i32,
                               ts_offset_ns: offset };
        }
        let exponent = tsresol as u32;
        if exponent <= 9 {
            Interface { link_type, snaplen, ts_mult: 10i128.pow(9 - exponent), ts_div: 1, ts_shift: -1,
                        ts_offset_ns: offset }
        } else {
            Interface { link_type, snaplen, ts_mult: 1, ts_div: 10i128.pow(exponent - 9), ts_shift: -1,
                        ts_offset_ns: offset }
        }
    }

    fn ns(&self, units: u64) -> i128 {
        if self.ts_shift >= 0 {
            (((units as u128) * 1_000_000_000) >> self.ts_shift) as i128 + self.ts_offset_ns
        } else {
            (units as i128 * self.ts_mult).div_euclid(self.ts_div) + self.ts_offset_ns
        }
    }
}

fn block_ok(buf: &[u8], pos: usize, le: bool) -> bool {
    if pos + 12 > buf.len() {
        return false;
    }
    let block_type = u32_at(buf, pos, le);
    let mut order = le;
    if block_type == BLOCK_SHB {
        match section_order(buf, pos) {
            None => return false,
            Some(found) => order = found,
        }
    }
    let length = u32_at(buf, pos + 4, order);
    if length < 12 || !length.is_multiple_of(4) || length > MAX_BLOCK_LEN || pos + length as usize > buf.len() {
        return false;
    }
    u32_at(buf, pos + length as usize - 4, order) == length
}

fn pcapng_resync(buf: &[u8], le: bool, start: usize, problems: &mut Problems, packets: i64) -> Option<usize> {
    let kinds = [BLOCK_EPB, BLOCK_SPB, BLOCK_IDB, BLOCK_ISB, BLOCK_NRB, BLOCK_OPB, BLOCK_DSB];
    let mut pos = start + 1;
    while pos + 4 <= buf.len() {
        let value = u32_at(buf, pos, le);
        if (kinds.contains(&value) || buf[pos..pos + 4] == PCAPNG_MAGIC) && block_ok(buf, pos, le) {
            problems.add("garbage_skipped", start, packets,
                         format!("skipped {} bytes to the next consistent block", pos - start));
            return Some(pos);
        }
        pos += 1;
    }
    problems.add("unrecoverable", start, packets, "no consistent block after a corrupt one; rest ignored".into());
    None
}

fn interface_block(buf: &[u8], pos: usize, length: usize, le: bool, problems: &mut Problems, packets: i64) -> Interface {
    let link_type = u16_at(buf, pos + 8, le) as u32;
    let snaplen = u32_at(buf, pos + 12, le);
    let mut tsresol: u8 = 6;
    let mut tsoffset: i64 = 0;
    let mut option = pos + 16;
    let end = pos + length - 4;
    while option + 4 <= end {
        let code = u16_at(buf, option, le);
        let size = u16_at(buf, option + 2, le) as usize;
        if code == 0 {
            break;
        }
        let value = option + 4;
        if value + size > end {
            problems.add("bad_option", option, packets,
                         format!("interface option {code} of {size} bytes overruns its block"));
            break;
        }
        if code == 9 && size >= 1 {
            let resolution = buf[value];
            let limit = if resolution & 0x80 != 0 { MAX_TSRESOL_EXPONENT } else { MAX_DECIMAL_EXPONENT };
            if resolution & 0x7F > limit {
                problems.add("bad_option", option, packets,
                             format!("if_tsresol {resolution:#x} is not a usable resolution; microseconds assumed"));
            } else {
                tsresol = resolution;
            }
        } else if code == 14 && size >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[value..value + 8]);
            tsoffset = if le { i64::from_le_bytes(b) } else { i64::from_be_bytes(b) };
        }
        option = value + size.div_ceil(4) * 4;
    }
    Interface::new(link_type, snaplen, tsresol, tsoffset)
}

fn read_pcapng<F: FnMut(Packet<'_>), Z: Fn(&mut Problems, i64)>(buf: &[u8], problems: &mut Problems, mut sink: F,
                                                                 zstd_note: &Z) -> i64 {
    let size = buf.len();
    let mut le = true;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut last_ts_ns: i64 = 0;
    let mut packets: i64 = 0;
    let mut pos = 0usize;
    loop {
        if pos + 12 > size {
            zstd_note(problems, packets);
            if size > pos {
                problems.add("truncated", pos, packets, "the stream ends inside a block header".into());
            }
            break;
        }
        let block_type = u32_at(buf, pos, le);
        if block_type == BLOCK_SHB {
            match section_order(buf, pos) {
                None => {
                    problems.add("bad_section_header", pos, packets, "section header without byte-order magic".into());
                    match pcapng_resync(buf, le, pos, problems, packets) {
                        Some(next) => {
                            pos = next;
                            continue;
                        }
                        None => {
                            zstd_note(problems, packets);
                            break;
                        }
                    }
                }
                Some(order) => le = order,
            }
        }
        let length = u32_at(buf, pos + 4, le);
        if length < 12 || !length.is_multiple_of(4) || length > MAX_BLOCK_LEN {
            problems.add("bad_block_length", pos, packets, format!("block type {block_type:#x} with length {length}"));
            match pcapng_resync(buf, le, pos, problems, packets) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => {
                    zstd_note(problems, packets);
                    break;
                }
            }
        }
        let length = length as usize;
        if pos + length > size {
            zstd_note(problems, packets);
            problems.add("truncated", pos, packets, format!("the stream ends inside a block of {length} bytes"));
            break;
        }
        if u32_at(buf, pos + length - 4, le) as usize != length {
            problems.add("bad_block_length", pos, packets,
                         format!("block type {block_type:#x}: trailing length differs from {length}"));
            match pcapng_resync(buf, le, pos, problems, packets) {
                Some(next) => {
                    pos = next;
                    continue;
                }
                None => {
                    zstd_note(problems, packets);
                    break;
                }
            }
        }
        let mut packet: Option<(u32, i64, i64, usize, usize)> = None; // link, ts, orig, start, end
        if block_type == BLOCK_EPB || block_type == BLOCK_OPB {
            if length < 32 {
                problems.add("bad_block_length", pos, packets, format!("packet block of {length} bytes"));
            } else {
                let (interface_id, high, low, captured, original) = if block_type == BLOCK_EPB {
                    (u32_at(buf, pos + 8, le), u32_at(buf, pos + 12, le), u32_at(buf, pos + 16, le),
                     u32_at(buf, pos + 20, le), u32_at(buf, pos + 24, le))
                } else {
                    (u16_at(buf, pos + 8, le) as u32, u32_at(buf, pos + 12, le), u32_at(buf, pos + 16, le),
                     u32_at(buf, pos + 20, le), u32_at(buf, pos + 24, le))
                };
                if interface_id as usize >= interfaces.len() {
                    problems.add("unknown_interface", pos, packets,
                                 format!("packet on undeclared interface {interface_id}"));
                } else if captured as usize > length - 32 {
                    problems.add("bad_captured_length", pos, packets,
                                 format!("captured length {captured} exceeds its block of {length} bytes"));
                } else {
                    let interface = interfaces[interface_id as usize];
                    let mut original = original;
                    if !(captured <= original && original <= MAX_ORIG_LEN) {
                        problems.add("bad_original_length", pos, packets,
                                     format!("original length {original} with captured length {captured}"));
                        original = captured;
                    }
                    let ts = interface.ns(((high as u64) << 32) | low as u64);
                    if (0..=MAX_TS_NS).contains(&ts) {
                        last_ts_ns = ts as i64;
                        packet = Some((interface.link_type, ts as i64, original as i64, pos + 28,
                                       pos + 28 + captured as usize));
                    } else {
                        problems.add("bad_timestamp", pos, packets, format!("timestamp {ts} ns is outside 1970..2262"));
                    }
                }
            }
        } else if block_type == BLOCK_SPB {
            if interfaces.is_empty() {
                problems.add("unknown_interface", pos, packets, "simple packet block before any interface".into());
            } else if length < 16 {
                problems.add("bad_block_length", pos, packets, format!("simple packet block of {length} bytes"));
            } else {
                let interface = interfaces[0];
                let mut original = u32_at(buf, pos + 8, le) as usize;
                let mut captured = original.min(length - 16);
                if interface.snaplen != 0 {
                    captured = captured.min(interface.snaplen as usize);
                }
                if original > MAX_ORIG_LEN as usize {
                    problems.add("bad_original_length", pos, packets,
                                 format!("simple packet of original length {original}"));
                    original = captured;
                }
                packet = Some((interface.link_type, last_ts_ns, original as i64, pos + 12, pos + 12 + captured));
            }
        } else if block_type == BLOCK_IDB {
            if length < 20 {
                problems.add("bad_block_length", pos, packets, format!("interface block of {length} bytes"));
            } else {
                interfaces.push(interface_block(buf, pos, length, le, problems, packets));
            }
        } else if block_type == BLOCK_SHB {
            interfaces.clear();
        }
        pos += length;
        if let Some((link_type, ts_ns, orig_len, start, end)) = packet {
            packets += 1;
            sink(Packet { link_type, ts_ns, orig_len, data: &buf[start..end] });
        }
    }
    packets
}
