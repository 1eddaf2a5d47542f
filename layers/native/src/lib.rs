//! freezeframe's compiled dissection core. The Python engine (freezeframe.dissect) is the reference; this crate
//! mirrors it module by module (reader <- pcapio, decode, tcp, conn <- connections, apps, dns, http, tls) and hands
//! the tables to Python as Arrow record batches through the Arrow C data interface (PyCapsule protocol).

pub mod apps;
pub mod conn;
pub mod decode;
pub mod dns;
pub mod http;
pub mod merge;
pub mod reader;
pub mod splice;
pub mod store;
pub mod tables;
pub mod tcp;
pub mod tls;
pub mod warmup;

use arrow_array::RecordBatch;

// Dissection allocates many small, short-lived objects (rows, field maps, buffers); glibc's malloc spent a fifth of
// the time in its free lists (perf), mimalloc a fraction of that. It is built without transparent huge pages (the
// crate's no_thp feature): with them, each first touch of its memory zeroed a whole 2 MB page, and the freed pages
// it returns to the system came back as new huge pages, so the process's system time swung between 0.2 and 0.6 s
// from run to run on the kernel-traffic bench, against a steady 0.35 s with 4 KB pages, and its peak RSS was 10-15 MB
// higher.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One node's dissection: segments fed in time order, TCP state carried across them.
pub struct Engine {
    pub tracker: conn::Tracker,
    window: Option<(i128, i128)>,
}

/// The outcome of one segment: not a capture (message), or read problems.
pub enum Fed {
    NotACapture(String),
    Read(Vec<reader::Problem>),
}

impl Engine {
    pub fn new(node: &str, window: Option<(i128, i128)>) -> Engine {
        Engine { tracker: conn::Tracker::new(node), window }
    }

    /// One segment's stored bytes (pcap or pcapng, zstd or not).
    pub fn feed(&mut self, raw: &[u8]) -> Fed {
        let (buf, zstd_error) = match reader::decompress(raw) {
            Ok(found) => found,
            Err(e) => return Fed::NotACapture(e.0),
        };
        let tracker = &mut self.tracker;
        let window = self.window;
        let result = reader::read_capture(&buf, zstd_error, |p| {
            if let Some((low, high)) = window {
                if (p.ts_ns as i128) < low || p.ts_ns as i128 >= high {
                    return;
                }
            }
            tracker.packet(p.link_type, p.ts_ns, p.orig_len, p.data);
        });
        match result {
            Ok(problems) => Fed::Read(problems.list),
            Err(e) => Fed::NotACapture(e.0),
        }
    }

    pub fn stats(&self) -> Vec<(&'static str, i64)> {
        let mut out = self.tracker.stats.items();
        out.extend(self.tracker.app.stats.items());
        out
    }

    /// Every table, in the schemas' column order (Kubernetes columns excluded: they are joined later). Called once:
    /// each table's rows are freed as soon as its batch is built (the application tables first, then the
    /// connections), so the engine's state and the batches are not both in memory whole; the counters and
    /// `payload_segments` stay.
    pub fn finish(&mut self) -> Vec<(&'static str, RecordBatch)> {
        self.tracker.app.http.finish();
        let ids = self.tracker.identities();
        for flow in &mut self.tracker.flows {
            flow.app = apps::AppState::Ignored; // stream reassembly and parsers: no table reads them
        }
        // Freed small objects leave pages mimalloc keeps; the batches' large buffers need fresh ones. Handing pages
        // back between the application tables as well cost a walk of every page and 10 k more page faults per
        // million packets for the same peak RSS, so it is done here and once the connections are built.
        give_back();
        let dns = tables::dns(&self.tracker, &ids);
        self.tracker.app.dns = Default::default();
        let http = tables::http(&self.tracker, &ids);
        self.tracker.app.http = Default::default();
        let tls = tables::tls(&self.tracker, &ids);
        self.tracker.app.tls = Default::default();
        let connections = tables::connections(&self.tracker, &ids);
        for flow in &mut self.tracker.flows {
            if let Some(tcp) = flow.tcp.as_mut() {
                tcp.release();
            }
        }
        give_back();
        vec![("connections", connections), ("dns", dns), ("http", http), ("tls", tls)]
    }

    /// conn_id -> TCP segments with payload, for merging time chunks.
    pub fn payload_segments(&mut self) -> Vec<(String, i64)> {
        let ids = self.tracker.identities();
        self.tracker.flows.iter().zip(ids).filter_map(|(f, id)| f.tcp.as_ref().map(|t| (id.conn_id().to_string(), t.payload_segments)))
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tracker = conn::Tracker::new("");
        give_back();
    }
}

/// Returns the memory the engine freed to the system: mimalloc keeps freed pages for reuse, but what comes after the
/// engine (pyarrow, Parquet) allocates elsewhere, so pages kept here would only add to the process's peak.
fn give_back() {
    extern "C" {
        // mimalloc's own API (linked in by the mimalloc crate, which does not wrap this one without more crates).
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers; it walks and purges the calling thread's heap and the free segments.
    unsafe { mi_collect(true) }
}

/// A bare walk over the records of a capture: the floor the benchmark compares with.
pub fn walk(raw: &[u8]) -> (i64, i64) {
    let Ok((buf, zstd_error)) = reader::decompress(raw) else { return (0, 0) };
    let mut packets = 0i64;
    let mut bytes = 0i64;
    let _ = reader::read_capture(&buf, zstd_error, |p| {
        packets += 1;
        bytes += p.data.len() as i64;
    });
    (packets, bytes)
}

#[cfg(feature = "python")]
mod python;
