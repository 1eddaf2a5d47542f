//! A time chunk's warm-up in the compiled core: a port of freezeframe.dissect.warmup (read its docstring for what is
//! kept and what is zeroed, and why). The chunk's tracker is first fed ``[warmup_start_ns, start_ns)`` of the
//! segments (problems ignored: the chunk that owns a segment reports them), then ``begin_chunk`` keeps the TCP state
//! and zeroes the counts; ``chunk_flows`` hands Python what ``ChunkState.fix`` and ``ChunkState.extras`` need.

use crate::Engine;

/// The warm-up's leftovers (dissect.warmup.ChunkState), per flow index at the start of the chunk.
#[derive(Default)]
pub struct ChunkState {
    /// Flows that had ended (port reuse, UDP idle split) before the chunk: wholly an earlier chunk's.
    ended: Vec<bool>,
    /// Completeness bits set in the warm-up, for the flows live at the start of the chunk.
    warm_bits: Vec<Option<i32>>,
    /// Flows whose RTT sample count holds one carried (pseudo) sample.
    pseudo_rtt: Vec<bool>,
}

/// One flow of the chunk for Python: conn_id, warm-up completeness bits (None: not warm), pseudo RTT sample,
/// TCP payload segments, RTT samples, min, max, sum and jitter sum (ns); the TCP fields are None for UDP.
pub type ChunkFlow = (String, Option<i32>, bool, Option<(i64, i64, i64, i64, i128, i128)>);

impl Engine {
    /// Feeds one segment's packets in ``[low, high)`` for the warm-up; its problems are the owning chunk's.
    pub fn warm_up(&mut self, raw: &[u8], low: i128, high: i128) {
        let window = self.window;
        self.window = Some((low, high));
        let _ = self.feed(raw);
        self.window = window;
    }

    /// Keeps the warm-up's TCP state and zeroes what the rows count (dissect.warmup.begin_chunk).
    pub fn begin_chunk(&mut self) -> ChunkState {
        let tracker = &mut self.tracker;
        let live = tracker.live_flags();
        let mut state = ChunkState { ended: Vec::with_capacity(live.len()), warm_bits: Vec::with_capacity(live.len()),
                                     pseudo_rtt: Vec::with_capacity(live.len()) };
        for (flow, is_live) in tracker.flows.iter_mut().zip(live) {
            state.ended.push(!is_live);
            state.warm_bits.push(if is_live { Some(flow.completeness) } else { None });
            flow.packets_out = 0;
            flow.packets_in = 0;
            flow.bytes_out = 0;
            flow.bytes_in = 0;
            flow.payload_out = 0;
            flow.payload_in = 0;
            let pseudo = match flow.tcp.as_mut() {
                Some(tcp) => tcp.begin_chunk(),
                None => false,
            };
            state.pseudo_rtt.push(pseudo && is_live);
        }
        tracker.stats = crate::conn::DissectStats::default();
        tracker.app.stats = crate::apps::AppStats::default();
        state
    }

    /// Every flow of the chunk (those ended in the warm-up left out), with what Python fixes its row with.
    pub fn chunk_flows(&mut self, state: Option<&ChunkState>) -> Vec<ChunkFlow> {
        let ids = self.tracker.identities();
        let mut out = Vec::with_capacity(ids.len());
        for (index, (flow, id)) in self.tracker.flows.iter().zip(ids).enumerate() {
            let (ended, warm_bits, pseudo) = match state {
                Some(s) if index < s.ended.len() => (s.ended[index], s.warm_bits[index], s.pseudo_rtt[index]),
                _ => (false, None, false),
            };
            if ended {
                continue;
            }
            let tcp = flow.tcp.as_ref().map(|t| {
                let (min, max, sum, jitter) = t.rtt_state();
                (t.payload_segments, t.rtt_samples, min, max, sum, jitter)
            });
            out.push((id.conn_id().to_string(), warm_bits, pseudo, tcp));
        }
        out
    }
}
