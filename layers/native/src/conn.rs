//! Connection tracking (a port of freezeframe.dissect.connections.ConnectionTracker): one row per TCP or UDP
//! conversation, Wireshark's conversation identity and tcp.completeness, the TCP analysis per conversation, and the
//! payload hand-off to the application trackers.

use rustc_hash::FxHashMap;

use crate::apps::{AppState, AppTracker};
use crate::decode::{decode, ip_text, Key, Skip, IPPROTO_TCP, IPPROTO_UDP};
use crate::tcp::{window_scale_option, TcpAnalysis, TH_ACK, TH_FIN, TH_RST, TH_SYN};

pub const UDP_IDLE_TIMEOUT_NS: i64 = 120 * 1_000_000_000;
pub const COMPLETENESS_SYN: i32 = 0x01;
pub const COMPLETENESS_SYNACK: i32 = 0x02;
pub const COMPLETENESS_ACK: i32 = 0x04;
pub const COMPLETENESS_DATA: i32 = 0x08;
pub const COMPLETENESS_FIN: i32 = 0x10;
pub const COMPLETENESS_RST: i32 = 0x20;
const SYN_ACK: u16 = TH_SYN | TH_ACK;
const FIN_ACK: u16 = TH_FIN | TH_ACK;
const SYN_FIN_RST: u16 = TH_SYN | TH_FIN | TH_RST;
const CLOSED: i32 = COMPLETENESS_FIN | COMPLETENESS_RST;
pub const NO_SEQ: i64 = -1;

pub struct Flow {
    pub proto: u8,
    pub key: Key, // the initiator's direction
    pub first_ns: i64,
    pub last_ns: i64,
    pub packets_out: i64,
    pub packets_in: i64,
    pub bytes_out: i64,
    pub bytes_in: i64,
    pub payload_out: i64,
    pub payload_in: i64,
    pub completeness: i32,
    pub base_seq_out: i64,
    pub base_seq_in: i64,
    pub isn_out: Option<i64>, // raw sequence number of the initiator's SYN, when seen
    pub isn_in: Option<i64>,  // raw sequence number of the responder's SYN (its SYN-ACK), when seen
    pub app: AppState,
    pub tcp: Option<Box<TcpAnalysis>>,
}

#[derive(Default, Clone, Copy)]
pub struct DissectStats {
    pub packets: i64,
    pub decoded: i64,
    pub non_ip: i64,
    pub malformed: i64,
    pub truncated: i64,
    pub fragments: i64,
    pub other_transport: i64,
    pub unsupported_link: i64,
    pub tcp_port_reuse: i64,
    pub udp_idle_splits: i64,
}

impl DissectStats {
    pub fn items(&self) -> Vec<(&'static str, i64)> {
        vec![("packets", self.packets), ("decoded", self.decoded), ("non_ip", self.non_ip),
             ("malformed", self.malformed), ("truncated", self.truncated), ("fragments", self.fragments),
             ("other_transport", self.other_transport), ("unsupported_link", self.unsupported_link),
             ("tcp_port_reuse", self.tcp_port_reuse), ("udp_idle_splits", self.udp_idle_splits)]
    }
}

pub struct Tracker {
    pub node: String,
    pub stats: DissectStats,
    pub flows: Vec<Flow>,
    live_tcp: FxHashMap<Key, (u32, bool)>,
    live_udp: FxHashMap<Key, (u32, bool)>,
    pub app: AppTracker,
    names: FxHashMap<(bool, [u8; 16]), u32>, // an address's index in ip_texts
    ip_texts: Vec<String>,
}

/// conn_id: 16 lowercase hexadecimal digits.
pub type ConnId = [u8; 16];

/// What identifies a flow in the tables: conn_id and the initiator's and responder's endpoints (the addresses as
/// indexes into the tracker's address texts, `Tracker::ip`, so a flow's identity holds no allocation).
#[derive(Clone, Copy)]
pub struct Identity {
    pub conn_id: ConnId,
    pub src_ip: u32,
    pub sport: u16,
    pub dst_ip: u32,
    pub dport: u16,
}

impl Identity {
    pub fn conn_id(&self) -> &str {
        std::str::from_utf8(&self.conn_id).unwrap_or_default() // hex digits: always UTF-8
    }
}

/// conn_id: the first 8 bytes of BLAKE2b over f"{node}|{proto}|{src_ip}|{sport}|{dst_ip}|{dport}|{first_ns}" (UTF-8),
/// in hex. `key` is a buffer reused from flow to flow: the text is written into it without the formatting machinery.
#[allow(clippy::too_many_arguments)]
pub fn connection_id(key: &mut Vec<u8>, node: &str, proto: &str, src_ip: &str, sport: u16, dst_ip: &str, dport: u16,
                     first_ns: i64) -> ConnId {
    use blake2::digest::{Update, VariableOutput};
    use crate::decode::push_decimal;
    key.clear();
    for part in [node, proto, src_ip] {
        key.extend_from_slice(part.as_bytes());
        key.push(b'|');
    }
    push_decimal(key, sport as u64);
    key.push(b'|');
    key.extend_from_slice(dst_ip.as_bytes());
    key.push(b'|');
    push_decimal(key, dport as u64);
    key.push(b'|');
    if first_ns < 0 {
        key.push(b'-');
    }
    push_decimal(key, first_ns.unsigned_abs());
    let mut hasher = blake2::Blake2bVar::new(8).expect("8 is a valid blake2b size");
    hasher.update(key);
    let mut digest = [0u8; 8];
    hasher.finalize_variable(&mut digest).expect("the output is 8 bytes");
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xF) as usize];
    }
    out
}

pub fn proto_name(proto: u8) -> &'static str {
    if proto == IPPROTO_TCP { "tcp" } else { "udp" }
}

impl Tracker {
    pub fn new(node: &str) -> Tracker {
        Tracker { node: node.to_string(), stats: DissectStats::default(), flows: Vec::new(),
                  live_tcp: FxHashMap::default(), live_udp: FxHashMap::default(), app: AppTracker::default(),
                  names: FxHashMap::default(), ip_texts: Vec::new() }
    }

    /// One packet, in capture order.
    pub fn packet(&mut self, link_type: u32, ts_ns: i64, orig_len: i64, data: &[u8]) {
        self.stats.packets += 1;
        let d = match decode(link_type, data) {
            Ok(d) => d,
            Err(skip) => {
                match skip {
                    Skip::NonIp => self.stats.non_ip += 1,
                    Skip::Malformed => self.stats.malformed += 1,
                    Skip::Truncated => self.stats.truncated += 1,
                    Skip::Fragment => self.stats.fragments += 1,
                    Skip::OtherTransport => self.stats.other_transport += 1,
                    Skip::UnsupportedLink => self.stats.unsupported_link += 1,
                }
                return;
            }
        };
        self.stats.decoded += 1;
        if d.proto == IPPROTO_TCP {
            self.tcp_segment(&d, ts_ns, orig_len, data);
            return;
        }
        let (index, outbound) = match self.live_udp.get(&d.key) {
            None => (self.open(IPPROTO_UDP, d.key, ts_ns), true),
            Some(&(index, outbound)) => {
                if ts_ns.wrapping_sub(self.flows[index as usize].last_ns) > UDP_IDLE_TIMEOUT_NS {
                    self.stats.udp_idle_splits += 1;
                    (self.open(IPPROTO_UDP, d.key, ts_ns), true)
                } else {
                    (index, outbound)
                }
            }
        };
        self.account(index, outbound, ts_ns, orig_len, d.payload_len, 0, data, d.payload_offset);
    }

    fn tcp_segment(&mut self, d: &crate::decode::Decoded, ts_ns: i64, orig_len: i64, data: &[u8]) {
        let flags = d.flags;
        let seq = d.seq;
        let entry = self.live_tcp.get(&d.key).copied();
        let pure_syn = flags & SYN_ACK == TH_SYN;
        let mut opens = false;
        let (index, outbound) = match entry {
            None => {
                opens = true;
                if flags & SYN_ACK == SYN_ACK {
                    (self.open(IPPROTO_TCP, d.key.reversed(), ts_ns), false)
                } else {
                    (self.open(IPPROTO_TCP, d.key, ts_ns), true)
                }
            }
            Some((index, outbound)) => {
                let mut result = (index, outbound);
                if pure_syn {
                    let flow = &self.flows[index as usize];
                    let base = if outbound { flow.base_seq_out } else { flow.base_seq_in };
                    if base == NO_SEQ {
                        opens = true;
                    } else if seq as i64 != base || flow.completeness & CLOSED != 0 {
                        result = (self.open(IPPROTO_TCP, d.key, ts_ns), true);
                        opens = true;
                        self.stats.tcp_port_reuse += 1;
                    }
                }
                result
            }
        };
        let flow = &mut self.flows[index as usize];
        let base = if flags & TH_SYN != 0 { seq as i64 } else { seq.wrapping_sub(1) as i64 };
        if outbound {
            if flow.base_seq_out == NO_SEQ {
                flow.base_seq_out = base;
            }
        } else if flow.base_seq_in == NO_SEQ {
            flow.base_seq_in = base;
        }
        if flags & TH_SYN != 0 {
            let isn = if outbound { &mut flow.isn_out } else { &mut flow.isn_in };
            if isn.is_none() {
                *isn = Some(seq as i64);
            }
        }
        if flags & SYN_FIN_RST != 0 {
            let mut completeness = flow.completeness;
            if pure_syn {
                if opens {
                    completeness |= COMPLETENESS_SYN | if d.payload_len != 0 { COMPLETENESS_DATA } else { 0 };
                }
            } else if flags & SYN_ACK == SYN_ACK {
                completeness |= COMPLETENESS_SYNACK;
            } else if flags & TH_ACK != 0 {
                completeness |= if d.payload_len != 0 { COMPLETENESS_DATA } else { COMPLETENESS_ACK };
            }
            if flags & FIN_ACK == FIN_ACK {
                completeness |= COMPLETENESS_FIN;
            }
            if flags & TH_RST != 0 {
                completeness |= COMPLETENESS_RST;
            }
            flow.completeness = completeness;
        } else if flags & TH_ACK != 0 {
            flow.completeness |= if d.payload_len != 0 { COMPLETENESS_DATA } else { COMPLETENESS_ACK };
        }
        let scale = if flags & TH_SYN != 0 {
            window_scale_option(data, d.header_offset + 20, d.payload_offset)
        } else {
            None
        };
        if let Some(tcp) = flow.tcp.as_mut() {
            tcp.segment(outbound, ts_ns, seq, d.ack, d.payload_len, flags, d.window, scale);
        }
        self.account(index, outbound, ts_ns, orig_len, d.payload_len, seq, data, d.payload_offset);
    }

    #[allow(clippy::too_many_arguments)]
    fn account(&mut self, index: u32, outbound: bool, ts_ns: i64, orig_len: i64, payload_len: i64, seq: u32,
               data: &[u8], payload_offset: usize) {
        let flow = &mut self.flows[index as usize];
        if outbound {
            flow.packets_out += 1;
            flow.bytes_out += orig_len;
            flow.payload_out += payload_len;
        } else {
            flow.packets_in += 1;
            flow.bytes_in += orig_len;
            flow.payload_in += payload_len;
        }
        if payload_len != 0 && !matches!(flow.app, AppState::Ignored) {
            self.app.payload(&mut self.flows, index, outbound, ts_ns, seq, data, payload_offset, payload_len);
        }
        let flow = &mut self.flows[index as usize];
        if ts_ns > flow.last_ns {
            flow.last_ns = ts_ns;
        } else if ts_ns < flow.first_ns {
            flow.first_ns = ts_ns;
        }
    }

    fn open(&mut self, proto: u8, key: Key, ts_ns: i64) -> u32 {
        let index = self.flows.len() as u32;
        self.flows.push(Flow {
            proto, key, first_ns: ts_ns, last_ns: ts_ns, packets_out: 0, packets_in: 0, bytes_out: 0, bytes_in: 0,
            payload_out: 0, payload_in: 0, completeness: 0, base_seq_out: NO_SEQ, base_seq_in: NO_SEQ,
            isn_out: None, isn_in: None,
            app: AppState::Unclassified,
            tcp: if proto == IPPROTO_TCP { Some(Box::new(TcpAnalysis::new())) } else { None },
        });
        let live = if proto == IPPROTO_TCP { &mut self.live_tcp } else { &mut self.live_udp };
        live.insert(key.reversed(), (index, false));
        live.insert(key, (index, true));
        index
    }

    fn ip_index(&mut self, v6: bool, addr: &[u8; 16]) -> u32 {
        let texts = &mut self.ip_texts;
        *self.names.entry((v6, *addr)).or_insert_with(|| {
            texts.push(ip_text(v6, addr));
            (texts.len() - 1) as u32
        })
    }

    /// The text of an address of an identity (`Identity::src_ip`, `dst_ip`).
    pub fn ip(&self, index: u32) -> &str {
        &self.ip_texts[index as usize]
    }

    /// conn_id and endpoints of every flow, by flow index.
    pub fn identities(&mut self) -> Vec<Identity> {
        let mut out = Vec::with_capacity(self.flows.len());
        let mut key = Vec::with_capacity(self.node.len() + 128);
        for i in 0..self.flows.len() {
            let (v6, src, dst, sport, dport, proto, first_ns) = {
                let f = &self.flows[i];
                (f.key.v6, f.key.src, f.key.dst, f.key.sport, f.key.dport, f.proto, f.first_ns)
            };
            let src_ip = self.ip_index(v6, &src);
            let dst_ip = self.ip_index(v6, &dst);
            let conn_id = connection_id(&mut key, &self.node, proto_name(proto), self.ip(src_ip), sport, self.ip(dst_ip),
                                        dport, first_ns);
            out.push(Identity { conn_id, src_ip, sport, dst_ip, dport });
        }
        out
    }
}

// A time chunk's warm-up (warmup.rs).
impl Tracker {
    /// Per flow: still live (its initiator's key maps to it), as opposed to ended by port reuse or a UDP idle split.
    pub(crate) fn live_flags(&self) -> Vec<bool> {
        let mut live = vec![false; self.flows.len()];
        for &(index, outbound) in self.live_tcp.values().chain(self.live_udp.values()) {
            if outbound {
                live[index as usize] = true;
            }
        }
        live
    }
}
