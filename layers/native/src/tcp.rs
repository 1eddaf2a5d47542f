//! Wireshark's TCP sequence analysis of one conversation, Zeek's conn_state and history: a port of
//! freezeframe.dissect.tcp (the reference; see its docstring for the rules and their sources).

pub const TH_FIN: u16 = 0x01;
pub const TH_SYN: u16 = 0x02;
pub const TH_RST: u16 = 0x04;
pub const TH_ACK: u16 = 0x10;

const A_RETRANSMISSION: u32 = 0x0001;
const A_LOST_PACKET: u32 = 0x0002;
const A_ACK_LOST_PACKET: u32 = 0x0004;
const A_KEEP_ALIVE: u32 = 0x0008;
const A_DUPLICATE_ACK: u32 = 0x0010;
const A_ZERO_WINDOW: u32 = 0x0020;
const A_ZERO_WINDOW_PROBE: u32 = 0x0040;
const A_ZERO_WINDOW_PROBE_ACK: u32 = 0x0080;
const A_KEEP_ALIVE_ACK: u32 = 0x0100;
const A_OUT_OF_ORDER: u32 = 0x0200;
const A_FAST_RETRANSMISSION: u32 = 0x0400;
const A_WINDOW_UPDATE: u32 = 0x0800;
const A_WINDOW_FULL: u32 = 0x1000;
const A_SPURIOUS_RETRANSMISSION: u32 = 0x8000;
const RETRANSMITTED: u32 = A_RETRANSMISSION | A_FAST_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION;

pub const MAX_UNACKED_SEGMENTS: usize = 10_000;
const FAST_RETRANSMISSION_NS: u64 = 20_000_000;
const DEFAULT_OOO_THRESHOLD_NS: u64 = 3_000_000;
const MAX_WINDOW_SHIFT: u8 = 14;
const WS_UNKNOWN: i32 = -1;
const WS_NONE: i32 = -2;
const HALF: u32 = 0x8000_0000;
const SFR: u16 = TH_SYN | TH_FIN | TH_RST;
const SF: u16 = TH_SYN | TH_FIN;
const SYN_ACK: u16 = TH_SYN | TH_ACK;

pub const H_SYN: u8 = 1;
pub const H_SYNACK: u8 = 2;
pub const H_ACK: u8 = 4;
pub const H_DATA: u8 = 8;
pub const H_FIN: u8 = 16;
pub const H_RST: u8 = 32;
const H_RETRANSMISSION: u8 = 64;
const H_ZERO_WINDOW: u8 = 128;
const LETTERS: [(u8, u8); 8] = [(H_SYN, b's'), (H_SYNACK, b'h'), (H_ACK, b'a'), (H_DATA, b'd'), (H_FIN, b'f'),
                                (H_RST, b'r'), (H_RETRANSMISSION, b't'), (H_ZERO_WINDOW, b'w')];

/// The shift of a Window Scale option in ``data[start..end]`` (RFC 7323 2.2), else None.
pub fn window_scale_option(data: &[u8], start: usize, end: usize) -> Option<u8> {
    let end = end.min(data.len());
    let mut position = start;
    while position < end {
        let kind = data[position];
        if kind == 0 {
            return None;
        }
        if kind == 1 {
            position += 1;
            continue;
        }
        if position + 1 >= end {
            return None;
        }
        let length = data[position + 1] as usize;
        if length < 2 {
            return None;
        }
        if kind == 3 && length == 3 && position + 2 < end {
            return Some(data[position + 2].min(MAX_WINDOW_SHIFT));
        }
        position += length;
    }
    None
}

#[derive(Clone, Copy)]
struct Seg {
    seq: u32,
    nextseq: u32,
    ts: i64,
}

struct Direction {
    nextseq: u32,
    nextseq_ns: i64,
    maxseqtobeacked: u32,
    lastack: u32,
    lastack_ns: i64,
    window: u64,
    win_scale: i32,
    window_from_syn: bool,
    dupacknum: u32,
    lastsegmentflags: u32,
    segments: Vec<Seg>,
    ascending: bool,
    announced_scale: Option<u8>,
}

impl Direction {
    fn new() -> Direction {
        Direction { nextseq: 0, nextseq_ns: 0, maxseqtobeacked: 0, lastack: 0, lastack_ns: 0, window: 0xFFFF_FFFF,
                    win_scale: WS_UNKNOWN, window_from_syn: false, dupacknum: 0, lastsegmentflags: 0,
                    segments: Vec::new(), ascending: true, announced_scale: None }
    }
}

#[inline]
fn wsub(a: u32, b: u32) -> u32 {
    a.wrapping_sub(b)
}

pub struct TcpAnalysis {
    out: Direction,
    in_: Direction,
    pub retransmissions_out: i64,
    pub retransmissions_in: i64,
    pub fast_retransmissions: i64,
    pub spurious_retransmissions: i64,
    pub out_of_order: i64,
    pub dup_acks_out: i64,
    pub dup_acks_in: i64,
    pub lost_segments: i64,
    pub zero_window_out: i64,
    pub zero_window_in: i64,
    pub window_full: i64,
    pub keepalives: i64,
    pub rtt_samples: i64,
    rtt_sum_ns: i128,
    rtt_min_ns: i64,
    rtt_max_ns: i64,
    rtt_last_ns: i64,
    rtt_jitter_sum_ns: i128,
    pub payload_bytes: i64,
    retransmitted_bytes: i64,
    pub payload_segments: i64,
    pub rst_count: i64,
    pub fin_count: i64,
    first_syn_ns: i64,
    first_synack_ns: i64,
    first_data_ns: i64,
    mru_syn_ns: i64,
    first_rtt_ns: i64,
    history: Vec<u8>,
    pub seen_out: u8,
    pub seen_in: u8,
}

/// The TCP insight columns of one connection row (schemas.TCP_INSIGHTS).
pub struct Insights<'a> {
    pub conn_state: &'static str,
    pub history: &'a [u8], // ASCII letters
    pub syn_to_synack_us: Option<i64>,
    pub handshake_us: Option<i64>,
    pub time_to_first_data_us: Option<i64>,
    pub retransmissions: i64,
    pub retransmissions_out: i64,
    pub retransmissions_in: i64,
    pub fast_retransmissions: i64,
    pub spurious_retransmissions: i64,
    pub out_of_order: i64,
    pub dup_acks: i64,
    pub dup_acks_out: i64,
    pub dup_acks_in: i64,
    pub lost_segments: i64,
    pub retransmission_rate: Option<f64>,
    pub zero_window_events: i64,
    pub zero_window_events_out: i64,
    pub zero_window_events_in: i64,
    pub window_full_events: i64,
    pub window_scale: Option<i32>,
    pub window_scale_in: Option<i32>,
    pub keepalives: i64,
    pub rtt_min_us: Option<i64>,
    pub rtt_avg_us: Option<i64>,
    pub rtt_max_us: Option<i64>,
    pub rtt_samples: i64,
    pub rtt_jitter_us: Option<i64>,
    pub bytes_total: i64,
    pub goodput_bytes: i64,
    pub rst_count: i64,
    pub fin_count: i64,
    pub close: &'static str,
}

/// floor(a / b) as i64, in 64-bit arithmetic when both fit (the same quotient; 128-bit division is a library call).
fn floor_div(a: i128, b: i128) -> i64 {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) if !(a == i64::MIN && b == -1) => a.div_euclid(b),
        _ => a.div_euclid(b) as i64,
    }
}

impl TcpAnalysis {
    /// Frees what only the analysis and the connections table need (unacked segments, history); the counters stay.
    pub fn release(&mut self) {
        self.out.segments = Vec::new();
        self.in_.segments = Vec::new();
        self.history = Vec::new();
    }

    pub fn new() -> TcpAnalysis {
        TcpAnalysis {
            out: Direction::new(), in_: Direction::new(), retransmissions_out: 0, retransmissions_in: 0,
            fast_retransmissions: 0, spurious_retransmissions: 0, out_of_order: 0, dup_acks_out: 0, dup_acks_in: 0,
            lost_segments: 0, zero_window_out: 0, zero_window_in: 0, window_full: 0, keepalives: 0, rtt_samples: 0,
            rtt_sum_ns: 0, rtt_min_ns: 0, rtt_max_ns: 0, rtt_last_ns: -1, rtt_jitter_sum_ns: 0, payload_bytes: 0,
            retransmitted_bytes: 0, payload_segments: 0, rst_count: 0, fin_count: 0, first_syn_ns: -1,
            first_synack_ns: -1, first_data_ns: -1, mru_syn_ns: 0, first_rtt_ns: 0, history: Vec::new(),
            seen_out: 0, seen_in: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn segment(&mut self, outbound: bool, ts: i64, seq: u32, ack: u32, seglen: i64, flags: u16, window: u16,
                   window_scale: Option<u8>) -> u32 {
        let (fwd, rev) = if outbound { (&mut self.out, &mut self.in_) } else { (&mut self.in_, &mut self.out) };
        let window64 = window as u64;
        let fwd_next = fwd.nextseq;
        let mut ta: u32 = 0;
        let ahead = wsub(seq, fwd_next);
        if seglen == 1 && ahead == 0 && rev.window == 0 {
            ta = A_ZERO_WINDOW_PROBE;
        } else if flags & SFR != 0 {
            if fwd_next != 0 && ahead > 0 && ahead <= HALF && flags & TH_RST == 0 {
                ta = A_LOST_PACKET;
            }
        } else {
            if window == 0 {
                ta = A_ZERO_WINDOW;
            }
            if fwd_next != 0 && ahead > 0 && ahead <= HALF {
                ta |= A_LOST_PACKET;
            }
            if seglen != 0 {
                if seglen == 1 && ahead == 0xFFFF_FFFF {
                    ta |= A_KEEP_ALIVE;
                }
                let scale = rev.win_scale;
                if scale != WS_UNKNOWN {
                    let shift = if rev.window_from_syn || scale == WS_NONE { 0 } else { scale as u32 };
                    let limit = rev.lastack.wrapping_add(((rev.window << shift) & 0xFFFF_FFFF) as u32);
                    if seq.wrapping_add(seglen as u32) == limit {
                        ta |= A_WINDOW_FULL;
                    }
                }
            } else if ahead == 0 {
                if ack == fwd.lastack {
                    if window != 0 && window64 != fwd.window {
                        ta |= A_WINDOW_UPDATE;
                    } else if window != 0 && rev.lastsegmentflags & A_KEEP_ALIVE != 0 {
                        ta |= A_KEEP_ALIVE_ACK;
                    } else if window == 0 && fwd.window == 0 && rev.lastsegmentflags & A_ZERO_WINDOW_PROBE != 0 {
                        ta |= A_ZERO_WINDOW_PROBE_ACK;
                    } else if window != 0 {
                        fwd.dupacknum += 1;
                        ta |= A_DUPLICATE_ACK;
                    }
                }
            } else if ahead == 0xFFFF_FFFF {
                ta |= A_KEEP_ALIVE;
            }
        }
        if ack != fwd.lastack {
            fwd.dupacknum = 0;
        }
        let rev_max = rev.maxseqtobeacked;
        if rev_max != 0 && flags & TH_ACK != 0 && wsub(rev_max, ack) >= HALF {
            ta |= A_ACK_LOST_PACKET;
            rev.maxseqtobeacked = rev.nextseq;
        }
        let seglen32 = seglen as u32;
        if (seglen > 0 || flags & SF != 0) && ta & A_KEEP_ALIVE == 0 {
            let not_advanced = fwd_next != 0 && ahead >= HALF && !(seglen > 1 && ahead == 0xFFFF_FFFF);
            let end = seq.wrapping_add(seglen32);
            let rev_lastack = rev.lastack;
            if seglen > 0 && rev_lastack != 0 && (end == rev_lastack || wsub(end, rev_lastack) >= HALF) {
                ta |= A_SPURIOUS_RETRANSMISSION;
            } else if not_advanced {
                let since_ack = (ts as u64).wrapping_sub(rev.lastack_ns as u64);
                let since_next = (ts as u64).wrapping_sub(fwd.nextseq_ns as u64);
                let threshold = if self.first_rtt_ns != 0 { self.first_rtt_ns as u64 } else { DEFAULT_OOO_THRESHOLD_NS };
                if rev.dupacknum >= 2 && rev_lastack == seq && since_ack < FAST_RETRANSMISSION_NS {
                    ta |= A_FAST_RETRANSMISSION;
                } else if since_next < threshold && fwd_next != end.wrapping_add(if flags & SF != 0 { 1 } else { 0 }) {
                    ta |= A_OUT_OF_ORDER;
                } else {
                    ta |= A_RETRANSMISSION;
                }
            }
        }
        let mut nextseq = seq.wrapping_add(seglen32);
        if (seglen != 0 || flags & SF != 0) && fwd.segments.len() < MAX_UNACKED_SEGMENTS {
            if flags & SF != 0 {
                nextseq = nextseq.wrapping_add(1);
            }
            if let Some(last) = fwd.segments.last() {
                if wsub(last.nextseq, nextseq) < HALF {
                    fwd.ascending = false;
                }
            }
            fwd.segments.push(Seg { seq, nextseq, ts });
        }
        if ta & A_ZERO_WINDOW_PROBE == 0 {
            if fwd_next == 0 || wsub(fwd_next, nextseq) >= HALF {
                fwd.nextseq = nextseq;
                fwd.nextseq_ns = ts;
            }
            if seq == fwd.maxseqtobeacked || fwd.maxseqtobeacked == 0 {
                fwd.maxseqtobeacked = fwd.nextseq;
            }
        }
        fwd.window = window64;
        fwd.window_from_syn = flags & TH_SYN != 0;
        fwd.lastack = ack;
        fwd.lastack_ns = ts;
        fwd.lastsegmentflags = ta;
        let mut sample = None;
        if !rev.segments.is_empty() {
            sample = take_ack(rev, ack, ts);
        }
        if let Some(sample) = sample {
            self.rtt(sample);
        }
        if flags & TH_SYN != 0 {
            self.syn(outbound, flags, ts, window_scale);
        } else if self.first_rtt_ns == 0 && self.mru_syn_ns != 0 && flags & TH_ACK != 0 {
            self.first_rtt_ns = ts.wrapping_sub(self.mru_syn_ns);
        }
        let mut bits: u8 = if flags & TH_SYN != 0 {
            if flags & TH_ACK != 0 { H_SYNACK } else { H_SYN }
        } else if seglen != 0 {
            H_DATA
        } else if flags & TH_ACK != 0 && flags & (TH_FIN | TH_RST) == 0 {
            H_ACK
        } else {
            0
        };
        if seglen != 0 {
            self.payload_bytes += seglen;
            self.payload_segments += 1;
            if self.first_data_ns < 0 {
                self.first_data_ns = ts;
            }
        }
        if flags & TH_FIN != 0 {
            bits |= H_FIN;
            self.fin_count += 1;
        }
        if flags & TH_RST != 0 {
            bits |= H_RST;
            self.rst_count += 1;
        }
        if ta != 0 {
            bits |= self.count(outbound, ta, seglen);
        }
        let seen = if outbound { self.seen_out } else { self.seen_in };
        let new = bits & !seen;
        if new != 0 {
            for (bit, letter) in LETTERS {
                if new & bit != 0 {
                    self.history.push(if outbound { letter.to_ascii_uppercase() } else { letter });
                }
            }
            if outbound {
                self.seen_out |= new;
            } else {
                self.seen_in |= new;
            }
        }
        ta
    }

    fn rtt(&mut self, sample: i64) {
        if self.rtt_samples != 0 {
            self.rtt_jitter_sum_ns += (sample as i128 - self.rtt_last_ns as i128).abs();
            if sample < self.rtt_min_ns {
                self.rtt_min_ns = sample;
            }
            if sample > self.rtt_max_ns {
                self.rtt_max_ns = sample;
            }
        } else {
            self.rtt_min_ns = sample;
            self.rtt_max_ns = sample;
        }
        self.rtt_samples += 1;
        self.rtt_sum_ns += sample as i128;
        self.rtt_last_ns = sample;
    }

    fn syn(&mut self, outbound: bool, flags: u16, ts: i64, window_scale: Option<u8>) {
        let (fwd, rev) = if outbound { (&mut self.out, &mut self.in_) } else { (&mut self.in_, &mut self.out) };
        let synack = flags & SYN_ACK == SYN_ACK;
        if let Some(scale) = window_scale {
            fwd.win_scale = scale as i32;
            if fwd.announced_scale.is_none() {
                fwd.announced_scale = Some(scale);
            }
        }
        if fwd.win_scale == WS_UNKNOWN {
            fwd.win_scale = WS_NONE;
            rev.win_scale = WS_NONE;
        } else if synack && rev.win_scale == WS_NONE {
            fwd.win_scale = WS_NONE;
        }
        if synack {
            if self.first_synack_ns < 0 {
                self.first_synack_ns = ts;
            }
        } else {
            self.mru_syn_ns = ts;
            if self.first_syn_ns < 0 {
                self.first_syn_ns = ts;
            }
        }
    }

    fn count(&mut self, outbound: bool, ta: u32, seglen: i64) -> u8 {
        let mut bits = 0;
        if ta & RETRANSMITTED != 0 {
            bits |= H_RETRANSMISSION;
            self.retransmitted_bytes += seglen;
            if outbound { self.retransmissions_out += 1 } else { self.retransmissions_in += 1 }
            if ta & A_FAST_RETRANSMISSION != 0 {
                self.fast_retransmissions += 1;
            }
            if ta & A_SPURIOUS_RETRANSMISSION != 0 {
                self.spurious_retransmissions += 1;
            }
        }
        if ta & A_OUT_OF_ORDER != 0 {
            self.out_of_order += 1;
        }
        if ta & A_DUPLICATE_ACK != 0 {
            if outbound { self.dup_acks_out += 1 } else { self.dup_acks_in += 1 }
        }
        if ta & A_LOST_PACKET != 0 {
            self.lost_segments += 1;
        }
        if ta & A_ZERO_WINDOW != 0 {
            bits |= H_ZERO_WINDOW;
            if outbound { self.zero_window_out += 1 } else { self.zero_window_in += 1 }
        }
        if ta & A_WINDOW_FULL != 0 {
            self.window_full += 1;
        }
        if ta & A_KEEP_ALIVE != 0 {
            self.keepalives += 1;
        }
        bits
    }

    pub fn conn_state(&self) -> &'static str {
        let (out, in_) = (self.seen_out, self.seen_in);
        let syn = out & H_SYN != 0;
        let synack = in_ & H_SYNACK != 0;
        if syn && !synack {
            if in_ & H_RST != 0 {
                return "REJ";
            }
            if out & H_RST != 0 {
                return "RSTOS0";
            }
            if out & H_FIN != 0 {
                return "SH";
            }
            return "S0";
        }
        if synack && !syn {
            if in_ & H_RST != 0 {
                return "RSTRH";
            }
            if in_ & H_FIN != 0 {
                return "SHR";
            }
            return "OTH";
        }
        if !syn {
            return "OTH";
        }
        if out & H_RST != 0 {
            return "RSTO";
        }
        if in_ & H_RST != 0 {
            return "RSTR";
        }
        if out & H_FIN != 0 && in_ & H_FIN != 0 {
            return "SF";
        }
        if out & H_FIN != 0 {
            return "S2";
        }
        if in_ & H_FIN != 0 {
            return "S3";
        }
        "S1"
    }

    fn close(&self) -> &'static str {
        if self.seen_out & H_SYN != 0 && self.seen_in & H_SYNACK == 0 {
            "handshake_failed"
        } else if self.rst_count != 0 {
            "rst"
        } else if self.fin_count != 0 {
            "fin"
        } else {
            "open"
        }
    }

    pub fn insights(&self) -> Insights<'_> {
        let first_syn = self.first_syn_ns;
        let retransmissions = self.retransmissions_out + self.retransmissions_in;
        let samples = self.rtt_samples;
        Insights {
            conn_state: self.conn_state(),
            history: &self.history,
            syn_to_synack_us: if first_syn >= 0 && self.first_synack_ns >= first_syn {
                Some(floor_div(self.first_synack_ns as i128 - first_syn as i128, 1000))
            } else {
                None
            },
            handshake_us: if self.first_rtt_ns != 0 { Some(floor_div(self.first_rtt_ns as i128, 1000)) } else { None },
            time_to_first_data_us: if first_syn >= 0 && self.first_data_ns >= first_syn {
                Some(floor_div(self.first_data_ns as i128 - first_syn as i128, 1000))
            } else {
                None
            },
            retransmissions,
            retransmissions_out: self.retransmissions_out,
            retransmissions_in: self.retransmissions_in,
            fast_retransmissions: self.fast_retransmissions,
            spurious_retransmissions: self.spurious_retransmissions,
            out_of_order: self.out_of_order,
            dup_acks: self.dup_acks_out + self.dup_acks_in,
            dup_acks_out: self.dup_acks_out,
            dup_acks_in: self.dup_acks_in,
            lost_segments: self.lost_segments,
            retransmission_rate: if self.payload_segments != 0 {
                Some(retransmissions as f64 / self.payload_segments as f64)
            } else {
                None
            },
            zero_window_events: self.zero_window_out + self.zero_window_in,
            zero_window_events_out: self.zero_window_out,
            zero_window_events_in: self.zero_window_in,
            window_full_events: self.window_full,
            window_scale: self.out.announced_scale.map(|v| v as i32),
            window_scale_in: self.in_.announced_scale.map(|v| v as i32),
            keepalives: self.keepalives,
            rtt_min_us: if samples != 0 { Some(floor_div(self.rtt_min_ns as i128, 1000)) } else { None },
            rtt_avg_us: if samples != 0 {
                Some(floor_div(self.rtt_sum_ns.div_euclid(samples as i128), 1000))
            } else {
                None
            },
            rtt_max_us: if samples != 0 { Some(floor_div(self.rtt_max_ns as i128, 1000)) } else { None },
            rtt_samples: samples,
            rtt_jitter_us: if samples > 1 {
                Some(floor_div(self.rtt_jitter_sum_ns.div_euclid(samples as i128 - 1), 1000))
            } else {
                None
            },
            bytes_total: self.payload_bytes,
            goodput_bytes: self.payload_bytes - self.retransmitted_bytes,
            rst_count: self.rst_count,
            fin_count: self.fin_count,
            close: self.close(),
        }
    }
}

impl Default for TcpAnalysis {
    fn default() -> Self {
        Self::new()
    }
}

/// ``ack`` against the peer's (non-empty) unacknowledged list; the ack_rtt sample when one is due.
fn take_ack(rev: &mut Direction, ack: u32, ts: i64) -> Option<i64> {
    let newest = *rev.segments.last().unwrap();
    if rev.ascending && (ack == newest.nextseq || wsub(newest.nextseq, ack) >= HALF) {
        rev.segments.clear();
        if ack == newest.nextseq && ts != newest.ts {
            return Some(ts.wrapping_sub(newest.ts));
        }
        return None;
    }
    // In place, in order: the entries not acknowledged (one partly acknowledged starts at `ack`); the earliest
    // entry that `ack` ends gives the sample.
    let mut acked_ns: Option<i64> = None;
    rev.segments.retain_mut(|entry| {
        if ack == entry.nextseq {
            acked_ns.get_or_insert(entry.ts);
            return false;
        }
        if wsub(entry.seq, ack) >= HALF && wsub(ack, entry.nextseq) >= HALF {
            entry.seq = ack;
            true
        } else {
            wsub(ack, entry.nextseq) >= HALF
        }
    });
    if rev.segments.is_empty() {
        rev.ascending = true;
    }
    match acked_ns {
        Some(sent) if ts != sent => Some(ts.wrapping_sub(sent)),
        _ => None,
    }
}

// A time chunk's warm-up (warmup.rs, freezeframe.dissect.warmup.begin_chunk).
impl TcpAnalysis {
    /// Keeps the sequence state, zeroes what the row counts; true when one RTT sample is carried (pseudo sample).
    pub(crate) fn begin_chunk(&mut self) -> bool {
        self.retransmissions_out = 0;
        self.retransmissions_in = 0;
        self.fast_retransmissions = 0;
        self.spurious_retransmissions = 0;
        self.out_of_order = 0;
        self.dup_acks_out = 0;
        self.dup_acks_in = 0;
        self.lost_segments = 0;
        self.zero_window_out = 0;
        self.zero_window_in = 0;
        self.window_full = 0;
        self.keepalives = 0;
        self.rtt_sum_ns = 0;
        self.rtt_jitter_sum_ns = 0;
        self.payload_bytes = 0;
        self.retransmitted_bytes = 0;
        self.payload_segments = 0;
        self.rst_count = 0;
        self.fin_count = 0;
        self.history.clear();
        if self.rtt_samples != 0 {
            self.rtt_samples = 1;
            self.rtt_min_ns = 1 << 62;
            self.rtt_max_ns = -1;
            return true;
        }
        false
    }

    /// (RTT min, max, sum and jitter sum in ns) for the chunk's rows and merge.
    pub(crate) fn rtt_state(&self) -> (i64, i64, i128, i128) {
        (self.rtt_min_ns, self.rtt_max_ns, self.rtt_sum_ns, self.rtt_jitter_sum_ns)
    }
}
