//! Coverage-guided fuzzing of export-pcap's merge (src/merge.rs): any bytes cut into segments of three nodes, merged
//! into pcap and pcapng. Run by `make bench-native-fuzz` (tests/bench/bench_native_fuzz.py) with
//! `cargo +nightly fuzz run merge`.
#![no_main]

use std::collections::VecDeque;

use freezeframe_native::merge::{merge, Finished, Format, Options, Source};
use libfuzzer_sys::fuzz_target;

struct Memory<'a> {
    segments: Vec<VecDeque<&'a [u8]>>,
    written: usize,
}

impl<'a> Source for Memory<'a> {
    type Error = ();
    type Bytes = &'a [u8];

    fn next_segment(&mut self, node: usize, finished: Finished<'_>) -> Result<Option<&'a [u8]>, ()> {
        if let Finished::NotACapture(_) = finished {
            return Err(()); // the Python side raises SegmentCorruptError here
        }
        Ok(self.segments[node].pop_front())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), ()> {
        self.written += bytes.len();
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // The first five bytes pick where the six segments (three nodes, two each) start.
    if data.len() < 5 {
        return;
    }
    let (cuts, rest) = data.split_at(5);
    let mut points: Vec<usize> = cuts.iter().map(|b| *b as usize * rest.len() / 256).collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain([rest.len()]) {
        parts.push(&rest[start..point.max(start)]);
        start = point.max(start);
    }
    for pcapng in [false, true] {
        let segments = parts.chunks(2).map(|c| c.iter().copied().collect()).collect();
        let mut source = Memory { segments, written: 0 };
        let format = if pcapng {
            Format::Pcapng { section_header: vec![0; 28], names: vec![b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()] }
        } else {
            Format::Pcap
        };
        let _ = merge(&mut source, 3, &Options { format, start_ns: None, end_ns: Some(1 << 62) });
    }
});
