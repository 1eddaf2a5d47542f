//! Application-layer dispatch and TCP reassembly (a port of freezeframe.dissect.apps): classifies each conversation
//! on its first payload and hands DNS, HTTP and TLS their bytes in sequence order.

use std::collections::BTreeMap;

use crate::conn::Flow;
use crate::decode::IPPROTO_UDP;
use crate::dns::DnsTracker;
use crate::http::{HttpConnection, HttpTracker};
use crate::tls::{TlsConnection, TlsTracker};

const DNS_PORT: u16 = 53;
const HTTP_METHODS: [&[u8]; 9] = [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ",
                                  b"CONNECT ", b"TRACE "];
const SYN_SEEN: i32 = 0x01;
const SYN_ACK_SEEN: i32 = 0x02;
const MAX_PENDING_SEGMENTS: usize = 256;
const MAX_PENDING_BYTES: usize = 1 << 20;

#[derive(Default, Clone, Copy)]
pub struct AppStats {
    pub dns_messages: i64,
    pub dns_malformed: i64,
    pub dns_unmatched_responses: i64,
    pub http_requests: i64,
    pub http_malformed: i64,
    pub http_unmatched_responses: i64,
    pub tls_records: i64,
    pub tls_malformed: i64,
    pub tcp_stream_gaps: i64,
}

impl AppStats {
    pub fn items(&self) -> Vec<(&'static str, i64)> {
        vec![("dns_messages", self.dns_messages), ("dns_malformed", self.dns_malformed),
             ("dns_unmatched_responses", self.dns_unmatched_responses), ("http_requests", self.http_requests),
             ("http_malformed", self.http_malformed), ("http_unmatched_responses", self.http_unmatched_responses),
             ("tls_records", self.tls_records), ("tls_malformed", self.tls_malformed),
             ("tcp_stream_gaps", self.tcp_stream_gaps)]
    }
}

/// A TCP direction that left the in-order fast path (apps.TcpDirection).
pub struct TcpDirection {
    next_seq: i64,
    broken: bool,
    pending: BTreeMap<u32, (i64, Vec<u8>, i64)>,
    pending_bytes: usize,
}

fn ahead(seq: u32, reference: u32) -> i64 {
    let delta = seq.wrapping_sub(reference);
    if delta >= 0x8000_0000 { delta as i64 - 0x1_0000_0000 } else { delta as i64 }
}

impl TcpDirection {
    fn accept(&mut self, seq: u32, chunk: &[u8], length: i64, ts_ns: i64, stats: &mut AppStats) -> Vec<(i64, Vec<u8>)> {
        let mut pieces = Vec::new();
        if self.broken {
            return pieces;
        }
        if self.next_seq < 0 {
            self.next_seq = seq as i64;
        }
        if ahead(seq, self.next_seq as u32) > 0 {
            self.wait(seq, chunk, length, ts_ns, stats);
            return pieces;
        }
        self.take(seq, chunk, length, ts_ns, &mut pieces, stats);
        while !self.pending.is_empty() && !self.broken {
            let next = self.next_seq as u32;
            // The due segment nearest to the next expected sequence (the first such in insertion order on ties,
            // which cannot happen: keys are distinct sequence numbers).
            let mut best: Option<(i64, u32)> = None;
            for &waiting in self.pending.keys() {
                let a = ahead(waiting, next);
                if a <= 0 && best.is_none_or(|(b, _)| a < b) {
                    best = Some((a, waiting));
                }
            }
            let Some((_, waiting)) = best else { break };
            let (wts, wchunk, wlen) = self.pending.remove(&waiting).unwrap();
            self.pending_bytes -= wchunk.len();
            self.take(waiting, &wchunk, wlen, wts, &mut pieces, stats);
        }
        pieces
    }

    fn take(&mut self, seq: u32, chunk: &[u8], length: i64, ts_ns: i64, pieces: &mut Vec<(i64, Vec<u8>)>,
            stats: &mut AppStats) {
        let behind = -ahead(seq, self.next_seq as u32);
        if behind >= length {
            return;
        }
        let start = (behind.max(0) as usize).min(chunk.len());
        let new = &chunk[start..];
        if !new.is_empty() {
            pieces.push((ts_ns, new.to_vec()));
        }
        self.next_seq = seq.wrapping_add(length as u32) as i64;
        if (chunk.len() as i64) < length {
            self.brk(stats);
        }
    }

    fn wait(&mut self, seq: u32, chunk: &[u8], length: i64, ts_ns: i64, stats: &mut AppStats) {
        if let Some(held) = self.pending.get(&seq) {
            if held.2 >= length {
                return;
            }
            self.pending_bytes -= held.1.len();
        }
        self.pending.insert(seq, (ts_ns, chunk.to_vec(), length));
        self.pending_bytes += chunk.len();
        if self.pending.len() > MAX_PENDING_SEGMENTS || self.pending_bytes > MAX_PENDING_BYTES {
            self.brk(stats);
        }
    }

    fn brk(&mut self, stats: &mut AppStats) {
        self.broken = true;
        self.pending.clear();
        self.pending_bytes = 0;
        stats.tcp_stream_gaps += 1;
    }
}

pub enum Handler {
    Dns(crate::dns::DnsStream),
    Http(Box<HttpConnection>),
    Tls(Box<TlsConnection>),
}

pub struct AppFlow {
    client_outbound: bool,
    handler: Handler,
    next_out: i64,
    next_in: i64,
    out: Option<Box<TcpDirection>>,
    in_: Option<Box<TcpDirection>>,
}

pub enum AppState {
    Unclassified,
    Ignored,
    UdpDns,
    Stream(Box<AppFlow>),
}

#[derive(Default)]
pub struct AppTracker {
    pub stats: AppStats,
    pub dns: DnsTracker,
    pub http: HttpTracker,
    pub tls: TlsTracker,
}

impl AppTracker {
    #[allow(clippy::too_many_arguments)]
    pub fn payload(&mut self, flows: &mut [Flow], index: u32, outbound: bool, ts_ns: i64, seq: u32, data: &[u8],
                   offset: usize, length: i64) {
        let flow = &mut flows[index as usize];
        if matches!(flow.app, AppState::Ignored) {
            return;
        }
        let start = offset.min(data.len());
        let end = (offset as i64 + length).clamp(start as i64, data.len() as i64) as usize;
        let chunk = &data[start..end];
        if flow.proto == IPPROTO_UDP {
            if matches!(flow.app, AppState::Unclassified) {
                if flow.key.sport != DNS_PORT && flow.key.dport != DNS_PORT {
                    flow.app = AppState::Ignored;
                    return;
                }
                flow.app = AppState::UdpDns;
            }
            self.dns.message(&mut self.stats, index, outbound, ts_ns, chunk, "udp");
            return;
        }
        if matches!(flow.app, AppState::Unclassified) {
            flow.app = self.classify(flow, outbound, chunk);
            if matches!(flow.app, AppState::Ignored) {
                return;
            }
        }
        let completeness = flow.completeness;
        let base = if outbound { flow.base_seq_out } else { flow.base_seq_in };
        let AppState::Stream(state) = &mut flow.app else { return };
        let from_client = outbound == state.client_outbound;
        let direction = if outbound { &mut state.out } else { &mut state.in_ };
        if direction.is_none() {
            let mut next_seq = if outbound { state.next_out } else { state.next_in };
            if next_seq < 0 && completeness & (if outbound { SYN_SEEN } else { SYN_ACK_SEEN }) != 0 {
                next_seq = (base + 1) & 0xFFFF_FFFF;
            }
            if (seq as i64 == next_seq || next_seq < 0) && chunk.len() as i64 == length && length > 0 {
                let next = seq.wrapping_add(length as u32) as i64;
                if outbound {
                    state.next_out = next;
                } else {
                    state.next_in = next;
                }
                let client_outbound = state.client_outbound;
                dispatch(&mut state.handler, &mut self.stats, &mut self.dns, &mut self.http, &mut self.tls, index,
                         client_outbound, from_client, ts_ns, chunk);
                return;
            }
            *direction = Some(Box::new(TcpDirection { next_seq, broken: false, pending: BTreeMap::new(),
                                                      pending_bytes: 0 }));
        }
        let direction = direction.as_mut().unwrap();
        let pieces = direction.accept(seq, chunk, length, ts_ns, &mut self.stats);
        let client_outbound = state.client_outbound;
        for (piece_ts, piece) in pieces {
            dispatch(&mut state.handler, &mut self.stats, &mut self.dns, &mut self.http, &mut self.tls, index,
                     client_outbound, from_client, piece_ts, &piece);
        }
    }

    fn classify(&mut self, flow: &Flow, outbound: bool, chunk: &[u8]) -> AppState {
        let stream = |client_outbound: bool, handler: Handler| {
            AppState::Stream(Box::new(AppFlow { client_outbound, handler, next_out: -1, next_in: -1, out: None,
                                                in_: None }))
        };
        if flow.key.sport == DNS_PORT || flow.key.dport == DNS_PORT {
            let client_outbound = flow.key.dport == DNS_PORT;
            return stream(client_outbound, Handler::Dns(crate::dns::DnsStream::default()));
        }
        if chunk.len() >= 3 && chunk[0] == 22 && chunk[1] == 3 {
            let client_outbound = outbound != (chunk.len() > 5 && chunk[5] == 2);
            return stream(client_outbound, Handler::Tls(Box::default()));
        }
        if HTTP_METHODS.iter().any(|m| chunk.starts_with(m)) {
            let id = self.http.open();
            return stream(outbound, Handler::Http(Box::new(HttpConnection::new(id))));
        }
        AppState::Ignored
    }
}

#[allow(clippy::too_many_arguments)]
fn dispatch(handler: &mut Handler, stats: &mut AppStats, dns: &mut DnsTracker, http: &mut HttpTracker,
            tls: &mut TlsTracker, flow: u32, client_outbound: bool, from_client: bool, ts_ns: i64, chunk: &[u8]) {
    match handler {
        Handler::Dns(stream) => stream.data(dns, stats, flow, client_outbound, from_client, ts_ns, chunk),
        Handler::Http(connection) => connection.data(http, stats, flow, client_outbound, from_client, ts_ns, chunk),
        Handler::Tls(connection) => connection.data(tls, stats, flow, client_outbound, from_client, ts_ns, chunk),
    }
}
