//! Coverage-guided fuzzing of the whole per-packet path: any bytes as one or two capture segments, then every table.
//! Run by `make bench-native-fuzz` (tests/bench/bench_native_fuzz.py) with `cargo +nightly fuzz run dissect`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut engine = freezeframe_native::Engine::new("fuzz", None);
    // The first byte picks where a second segment starts, so TCP and application state cross a segment boundary.
    let cut = data.first().map_or(0, |b| (*b as usize * data.len()) / 256);
    let (first, second) = data.split_at(cut.min(data.len()));
    engine.feed(first);
    engine.feed(second);
    let _ = engine.finish();
    let _ = freezeframe_native::walk(data);
});
