//! `freezeframe export-pcap`'s k-way merge (freezeframe.export), compiled.
//!
//! The reference is the Python path: each node's segments are read one after the other (this crate's reader,
//! which equals pcapio's `open_capture`), the nodes are merged by timestamp with `heapq.merge` (the next packet is
//! the one with the smallest `(timestamp, node index)` among the nodes' current packets, so ties keep node order and
//! a node's own packets keep their capture order even when they are not in time order), packets outside
//! `[start, end]` are dropped, and the rest are written as nanosecond pcap (one link type) or pcapng (one interface
//! per (node, link type), declared just before its first packet). The output is byte-identical to the Python
//! writers' (`PcapSink`, `PcapngSink`).
//!
//! Segments come from a [`Source`] (Python: a callback that opens, hashes and verifies the stored bytes), asked for
//! a node's next segment at the moment the Python generator would open it: at the start, and right after the node's
//! last packet of the current segment was written. The finished segment's read problems (or the reason it is not
//! a capture) go back with that request, so the Python side records them in the same order as its own path.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::reader;

pub const SNAPLEN: u32 = 262_144;
const LINKTYPE_ETHERNET: u32 = 1;
const FLUSH_BYTES: usize = 1 << 20;

/// What happened to the segment a node just finished, handed back with the request for its next one.
pub enum Finished<'a> {
    /// The node's first request: no segment was open.
    Start,
    /// The segment was read to its end; these are its read problems (possibly none).
    Read(&'a [reader::Problem]),
    /// The segment is not a capture at all (pcapio's CaptureFormatError); the source is expected to fail.
    NotACapture(&'a str),
}

/// Where segments come from and where the output goes.
pub trait Source {
    type Error;
    /// Stored bytes, kept (not copied) while their packets are merged when they are not compressed.
    type Bytes: AsRef<[u8]>;
    /// The stored bytes of `node`'s next segment (zstd or not), or None when the node has no more.
    fn next_segment(&mut self, node: usize, finished: Finished<'_>) -> Result<Option<Self::Bytes>, Self::Error>;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

pub enum Format {
    /// Classic nanosecond pcap.
    Pcap,
    /// pcapng: the section header block as the Python writer makes it, and the nodes' names (interface names).
    Pcapng { section_header: Vec<u8>, names: Vec<Vec<u8>> },
}

pub struct Options {
    pub format: Format,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
}

/// Why the merge stopped before the end (the Python writer raises ExportError there).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// pcap holds one link type: `node` brought `link_type`, `first_node` had set `first_link_type`.
    SecondLinkType { node: usize, link_type: u32, first_node: usize, first_link_type: u32 },
    /// A time past what pcap's 32-bit seconds hold.
    TimeOutOfRange { node: usize, ts_ns: i64 },
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub packets: i64,
    pub filtered_out: i64,
    /// Per node, its link types in order of first appearance (filtered packets included).
    pub link_types: Vec<Vec<u32>>,
    pub refusal: Option<Refusal>,
}

#[derive(Clone, Copy)]
struct Record {
    ts_ns: i64,
    orig_len: i64,
    link_type: u32,
    len: u32,
    start: usize,
}

enum Buffer<B> {
    Decompressed(Vec<u8>),
    Stored(B),
}

impl<B: AsRef<[u8]>> Buffer<B> {
    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Decompressed(v) => v,
            Buffer::Stored(b) => b.as_ref(),
        }
    }
}

struct Segment<B> {
    buf: Buffer<B>,
    records: Vec<Record>,
    next: usize,
    problems: Vec<reader::Problem>,
}

/// One stored segment read into memory and indexed: its packets' times, lengths and places in the buffer.
fn index<B: AsRef<[u8]>>(raw: B) -> Result<Segment<B>, String> {
    let decompressed = reader::decompress(raw.as_ref()).map(|(buf, error)| match buf {
        std::borrow::Cow::Owned(v) => (Some(v), error),
        std::borrow::Cow::Borrowed(_) => (None, error),
    });
    let (owned, zstd_error) = decompressed.map_err(|e| e.0)?;
    let buf = match owned {
        Some(v) => Buffer::Decompressed(v),
        None => Buffer::Stored(raw),
    };
    let bytes = buf.bytes();
    let mut records = Vec::with_capacity(bytes.len() / 128);
    let base = bytes.as_ptr() as usize;
    let problems = reader::read_capture(bytes, zstd_error, |p| {
        records.push(Record { ts_ns: p.ts_ns, orig_len: p.orig_len, link_type: p.link_type, len: p.data.len() as u32,
                              start: p.data.as_ptr() as usize - base });
    })
    .map_err(|e| e.0)?;
    Ok(Segment { buf, records, next: 0, problems: problems.list })
}

struct Writer {
    out: Vec<u8>,
    pcap_link: Option<(u32, usize)>,
    interfaces: Vec<Vec<(u32, u32)>>, // per node: (link type, interface id)
    declared: u32,
}

impl Writer {
    fn idb(&mut self, name: &[u8], link_type: u32) {
        let mut options = Vec::with_capacity(name.len() + 16);
        push_option(&mut options, 2, name);
        push_option(&mut options, 9, &[9]);
        push_option(&mut options, 0, &[]);
        let length = (12 + 8 + options.len()) as u32;
        let out = &mut self.out;
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&(link_type as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&SNAPLEN.to_le_bytes());
        out.extend_from_slice(&options);
        out.extend_from_slice(&length.to_le_bytes());
    }
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (4 - value.len() % 4) % 4, 0);
}

fn pcap_global_header(link_type: u32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&reader::MAGIC_NS.to_le_bytes());
    h[4..6].copy_from_slice(&2u16.to_le_bytes());
    h[6..8].copy_from_slice(&4u16.to_le_bytes());
    h[16..20].copy_from_slice(&SNAPLEN.to_le_bytes());
    h[20..24].copy_from_slice(&link_type.to_le_bytes());
    h
}

/// Asks `node`'s source for segments until one has a packet; None when the node has no more packets.
type SegmentOf<S> = Segment<<S as Source>::Bytes>;

fn advance<S: Source>(source: &mut S, node: usize, mut finished: Option<SegmentOf<S>>)
                      -> Result<Option<SegmentOf<S>>, S::Error> {
    let mut not_a_capture: Option<String> = None;
    loop {
        let raw = {
            let report = match (&finished, &not_a_capture) {
                (_, Some(message)) => Finished::NotACapture(message),
                (Some(segment), None) => Finished::Read(&segment.problems),
                (None, None) => Finished::Start,
            };
            source.next_segment(node, report)?
        };
        finished = None;
        not_a_capture = None;
        let Some(raw) = raw else { return Ok(None) };
        match index(raw) {
            Ok(segment) if segment.records.is_empty() => finished = Some(segment),
            Ok(segment) => return Ok(Some(segment)),
            Err(message) => not_a_capture = Some(message),
        }
    }
}

/// The merge: every node's packets in `(timestamp, node)` order, written as `options.format` through `source`.
pub fn merge<S: Source>(source: &mut S, nodes: usize, options: &Options) -> Result<Outcome, S::Error> {
    let mut writer = Writer { out: Vec::with_capacity(FLUSH_BYTES + (1 << 18)), pcap_link: None,
                              interfaces: vec![Vec::new(); nodes], declared: 0 };
    let result = run(source, nodes, options, &mut writer);
    // What was merged before a failure is written, as the Python writer's buffered stream does.
    if !writer.out.is_empty() {
        let flushed = source.write(&writer.out);
        if result.is_ok() {
            flushed?;
        }
    }
    result
}

fn run<S: Source>(source: &mut S, nodes: usize, options: &Options, writer: &mut Writer) -> Result<Outcome, S::Error> {
    let mut outcome = Outcome { link_types: vec![Vec::new(); nodes], ..Outcome::default() };
    if let Format::Pcapng { section_header, .. } = &options.format {
        writer.out.extend_from_slice(section_header);
    }
    let mut current: Vec<Option<SegmentOf<S>>> = Vec::with_capacity(nodes);
    let mut heap = BinaryHeap::with_capacity(nodes);
    for node in 0..nodes {
        let segment = advance(source, node, None)?;
        if let Some(s) = &segment {
            heap.push(Reverse((s.records[0].ts_ns, node)));
        }
        current.push(segment);
    }
    let start = options.start_ns.unwrap_or(i64::MIN);
    let end = options.end_ns.unwrap_or(i64::MAX);
    loop {
        let Some(mut top) = heap.peek_mut() else { break };
        let node = top.0 .1;
        let segment = current[node].as_mut().expect("a node in the heap has a segment");
        let record = segment.records[segment.next];
        segment.next += 1;
        let seen = &mut outcome.link_types[node];
        if seen.last() != Some(&record.link_type) && !seen.contains(&record.link_type) {
            seen.push(record.link_type);
        }
        if record.ts_ns < start || record.ts_ns > end {
            outcome.filtered_out += 1;
        } else {
            let data = &segment.buf.bytes()[record.start..record.start + record.len as usize];
            match &options.format {
                Format::Pcap => {
                    match writer.pcap_link {
                        None => {
                            writer.out.extend_from_slice(&pcap_global_header(record.link_type));
                            writer.pcap_link = Some((record.link_type, node));
                        }
                        Some((link, first)) if link != record.link_type => {
                            outcome.refusal = Some(Refusal::SecondLinkType { node, link_type: record.link_type,
                                                                             first_node: first, first_link_type: link });
                            return Ok(outcome);
                        }
                        Some(_) => {}
                    }
                    let sec = record.ts_ns.div_euclid(1_000_000_000);
                    if !(0..=u32::MAX as i64).contains(&sec) {
                        outcome.refusal = Some(Refusal::TimeOutOfRange { node, ts_ns: record.ts_ns });
                        return Ok(outcome);
                    }
                    let mut head = [0u8; 16];
                    for (i, word) in [sec as u32, record.ts_ns.rem_euclid(1_000_000_000) as u32, record.len,
                                      record.orig_len as u32].into_iter().enumerate() {
                        head[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
                    }
                    let out = &mut writer.out;
                    out.extend_from_slice(&head);
                    out.extend_from_slice(data);
                }
                Format::Pcapng { names, .. } => {
                    let interface = match writer.interfaces[node].iter().find(|(l, _)| *l == record.link_type) {
                        Some((_, id)) => *id,
                        None => {
                            let id = writer.declared;
                            writer.declared += 1;
                            writer.interfaces[node].push((record.link_type, id));
                            writer.idb(&names[node], record.link_type);
                            id
                        }
                    };
                    let pad = (4 - data.len() % 4) % 4;
                    let length = (32 + data.len() + pad) as u32;
                    let ts = record.ts_ns as u64;
                    let mut head = [0u8; 28];
                    for (i, word) in [6, length, interface, (ts >> 32) as u32, ts as u32, record.len,
                                      record.orig_len as u32].into_iter().enumerate() {
                        head[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
                    }
                    let out = &mut writer.out;
                    out.extend_from_slice(&head);
                    out.extend_from_slice(data);
                    out.extend_from_slice(&[0u8; 3][..pad]);
                    out.extend_from_slice(&length.to_le_bytes());
                }
            }
            outcome.packets += 1;
            if writer.out.len() >= FLUSH_BYTES {
                source.write(&writer.out)?;
                writer.out.clear();
            }
        }
        if segment.next < segment.records.len() {
            top.0 .0 = segment.records[segment.next].ts_ns;
            drop(top); // sifts the node down to its place
            continue;
        }
        std::collections::binary_heap::PeekMut::pop(top);
        let finished = current[node].take();
        if let Some(next) = advance(source, node, finished)? {
            heap.push(Reverse((next.records[0].ts_ns, node)));
            current[node] = Some(next);
        }
    }
    if let Format::Pcap = options.format {
        if writer.pcap_link.is_none() {
            writer.out.extend_from_slice(&pcap_global_header(LINKTYPE_ETHERNET));
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Memory {
        segments: Vec<std::collections::VecDeque<Vec<u8>>>,
        out: Vec<u8>,
        reports: Vec<(usize, String)>,
    }

    impl Source for Memory {
        type Error = String;
        type Bytes = Vec<u8>;
        fn next_segment(&mut self, node: usize, finished: Finished<'_>) -> Result<Option<Vec<u8>>, String> {
            match finished {
                Finished::Start => {}
                Finished::Read(p) => self.reports.push((node, format!("read {}", p.len()))),
                Finished::NotACapture(m) => return Err(m.to_string()),
            }
            Ok(self.segments[node].pop_front())
        }
        fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.out.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn pcap(times: &[u32]) -> Vec<u8> {
        let mut v = pcap_global_header(1).to_vec();
        for t in times {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&2u32.to_le_bytes());
            v.extend_from_slice(&2u32.to_le_bytes());
            v.extend_from_slice(&[*t as u8, 0]);
        }
        v
    }

    fn seconds(out: &[u8]) -> Vec<u32> {
        let mut pos = 24;
        let mut found = Vec::new();
        while pos < out.len() {
            found.push(u32::from_le_bytes(out[pos..pos + 4].try_into().unwrap()));
            pos += 16 + 2;
        }
        found
    }

    #[test]
    fn merges_by_time_keeping_node_order_on_ties() {
        let mut source = Memory { segments: vec![vec![pcap(&[1, 3]), pcap(&[]), pcap(&[5])].into(),
                                                 vec![pcap(&[1, 2, 6])].into()],
                                  out: Vec::new(), reports: Vec::new() };
        let outcome = merge(&mut source, 2, &Options { format: Format::Pcap, start_ns: None, end_ns: None }).unwrap();
        assert_eq!(outcome.packets, 6);
        assert_eq!(seconds(&source.out), vec![1, 1, 2, 3, 5, 6]);
        assert_eq!(source.out[24 + 16], 1); // the first packet of time 1 is node 0's
        assert_eq!(source.reports.iter().filter(|(n, _)| *n == 0).count(), 3);
    }

    #[test]
    fn garbage_is_not_a_capture() {
        let mut source = Memory { segments: vec![vec![b"garbage!".to_vec()].into()], out: Vec::new(),
                                  reports: Vec::new() };
        let error = merge(&mut source, 1, &Options { format: Format::Pcap, start_ns: None, end_ns: None });
        assert!(error.unwrap_err().contains("not a pcap or pcapng stream"));
    }
}

/// The Python entry point, ``freezeframe_native.merge_segments`` (see freezeframe.export).
#[cfg(feature = "python")]
pub mod python {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use pyo3::exceptions::{PyRuntimeError, PyTypeError};
    use pyo3::prelude::*;
    use pyo3::types::{PyBytes, PyString};

    use super::{Finished, Format, Options, Refusal, Source};

    struct PySource<'py> {
        py: Python<'py>,
        next_segment: Bound<'py, PyAny>,
        write: Bound<'py, PyAny>,
    }

    /// A Python bytes object's buffer, kept alive (and immutable) by the reference held with it.
    struct Stored {
        _owner: Py<PyBytes>,
        ptr: *const u8,
        len: usize,
    }

    impl AsRef<[u8]> for Stored {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: `ptr`/`len` are the buffer of the bytes object `_owner` holds a reference to; bytes objects
            // never change or move their buffer while alive.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    impl Source for PySource<'_> {
        type Error = PyErr;
        type Bytes = Stored;

        fn next_segment(&mut self, node: usize, finished: Finished<'_>) -> PyResult<Option<Stored>> {
            let report: Bound<'_, PyAny> = match finished {
                Finished::Start => self.py.None().into_bound(self.py),
                Finished::Read(problems) => problems.iter()
                    .map(|p| (p.kind, p.count, p.first_offset, p.first_packet, p.message.as_str()))
                    .collect::<Vec<_>>().into_pyobject(self.py)?.into_any(),
                Finished::NotACapture(message) => PyString::new(self.py, message).into_any(),
            };
            let got = self.next_segment.call1((node, report))?;
            if got.is_none() {
                return Ok(None);
            }
            let bytes = got.downcast::<PyBytes>()
                .map_err(|_| PyTypeError::new_err("next_segment must return bytes or None"))?;
            let view = bytes.as_bytes();
            Ok(Some(Stored { ptr: view.as_ptr(), len: view.len(), _owner: bytes.clone().unbind() }))
        }

        fn write(&mut self, bytes: &[u8]) -> PyResult<()> {
            self.write.call1((PyBytes::new(self.py, bytes),))?;
            Ok(())
        }
    }

    /// Merges ``len(nodes)`` nodes' segments into ``write``. ``next_segment(node, finished)`` returns the stored
    /// bytes of the node's next segment or None; ``finished`` is None (first call), the finished segment's read
    /// problems ``[(kind, count, first_offset, first_packet, message)]``, or a str when it was not a capture (the
    /// callback should raise). ``fmt`` is "pcap" or "pcapng" (then ``section_header`` is the SHB to start with).
    /// Returns ``(packets, filtered_out, link_types per node, refusal)``; refusal is None or
    /// ``("second_link_type", node, link_type, first_node, first_link_type)`` or
    /// ``("time_out_of_range", node, ts_ns, 0, 0)``.
    #[pyfunction]
    #[pyo3(signature = (nodes, next_segment, write, fmt, section_header=None, start_ns=None, end_ns=None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn merge_segments<'py>(py: Python<'py>, nodes: Vec<String>, next_segment: Bound<'py, PyAny>,
                               write: Bound<'py, PyAny>, fmt: &str, section_header: Option<Vec<u8>>,
                               start_ns: Option<i64>, end_ns: Option<i64>)
                               -> PyResult<(i64, i64, Vec<Vec<u32>>, Option<(&'static str, usize, i64, usize, u32)>)> {
        let format = match fmt {
            "pcap" => Format::Pcap,
            "pcapng" => Format::Pcapng {
                section_header: section_header.ok_or_else(|| PyTypeError::new_err("pcapng needs section_header"))?,
                names: nodes.iter().map(|n| n.as_bytes().to_vec()).collect(),
            },
            other => return Err(PyTypeError::new_err(format!("unknown format {other:?}"))),
        };
        let options = Options { format, start_ns, end_ns };
        let mut source = PySource { py, next_segment, write };
        let count = nodes.len();
        let outcome = catch_unwind(AssertUnwindSafe(|| super::merge(&mut source, count, &options)))
            .map_err(|_| PyRuntimeError::new_err("freezeframe_native: merge_segments panicked"))??;
        let refusal = outcome.refusal.map(|r| match r {
            Refusal::SecondLinkType { node, link_type, first_node, first_link_type } =>
                ("second_link_type", node, link_type as i64, first_node, first_link_type),
            Refusal::TimeOutOfRange { node, ts_ns } => ("time_out_of_range", node, ts_ns, 0, 0),
        });
        Ok((outcome.packets, outcome.filtered_out, outcome.link_types, refusal))
    }
}
