//! The rows of every table as Arrow record batches. Column names and types follow freezeframe.schemas (the single
//! source of truth): Python checks every batch against the schema, fills the Kubernetes enrichment columns (null
//! here, joined later) and rejects anything else missing. A new column is one ``push_*`` line below.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
use arrow_array::types::{ArrowPrimitiveType, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{ArrayRef, BooleanArray, PrimitiveArray, RecordBatch, StringArray};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};

use crate::conn::{proto_name, ConnId, Identity, Tracker};
use crate::decode::IPPROTO_TCP;
use crate::tcp::Insights;

// The tables are built row by row: each row (flow, DNS, HTTP or TLS row) is read once, in table order, and its
// values appended to every column's buffers. Built column by column, every column walked all the rows again, in
// sorted (so scattered) order: 50 walks over tens of megabytes for the connections table.

#[derive(Default)]
pub struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn push(&mut self, name: &str, array: ArrayRef) {
        self.fields.push(Field::new(name, array.data_type().clone(), true));
        self.arrays.push(array);
    }
    fn str(&mut self, name: &str, column: Strs) {
        self.push(name, Arc::new(column.finish()));
    }
    fn i64(&mut self, name: &str, column: Prim<i64>) {
        self.push(name, Arc::new(column.finish::<Int64Type>()));
    }
    fn i32(&mut self, name: &str, column: Prim<i32>) {
        self.push(name, Arc::new(column.finish::<Int32Type>()));
    }
    fn f64(&mut self, name: &str, column: Prim<f64>) {
        self.push(name, Arc::new(column.finish::<Float64Type>()));
    }
    fn bool(&mut self, name: &str, column: Vec<Option<bool>>) {
        self.push(name, Arc::new(column.into_iter().collect::<BooleanArray>()));
    }
    fn ts_ms(&mut self, name: &str, column: Prim<i64>) {
        self.push(name, Arc::new(column.finish::<TimestampMillisecondType>().with_timezone("UTC")));
    }
    fn batch(self) -> RecordBatch {
        let schema = Arc::new(Schema::new(self.fields));
        RecordBatch::try_new(schema, self.arrays).expect("columns of equal length")
    }
}

/// A primitive column appended value by value: the array `collect()` builds (nulls where None, zero beneath them,
/// no validity buffer without a null), without a validity bit per value until the first null (most columns have none).
struct Prim<T> {
    values: Vec<T>,
    valid: Vec<bool>, // filled from the first null on
}

impl<T: arrow_buffer::ArrowNativeType> Prim<T> {
    fn new(rows: usize) -> Prim<T> {
        Prim { values: Vec::with_capacity(rows), valid: Vec::new() }
    }
    #[inline(always)]
    fn push(&mut self, value: Option<T>) {
        match value {
            Some(v) => self.val(v),
            None => {
                if self.valid.is_empty() {
                    self.valid.resize(self.values.len(), true);
                }
                self.values.push(T::default());
                self.valid.push(false);
            }
        }
    }
    #[inline(always)]
    fn val(&mut self, value: T) {
        self.values.push(value);
        if !self.valid.is_empty() {
            self.valid.push(true);
        }
    }
    fn finish<A: ArrowPrimitiveType<Native = T>>(self) -> PrimitiveArray<A> {
        let nulls = if self.valid.is_empty() { None } else { Some(NullBuffer::from(self.valid)) };
        PrimitiveArray::new(self.values.into(), nulls)
    }
}

/// A string column appended value by value, written straight into its offsets and bytes (the array StringBuilder
/// builds: no validity buffer without a null, an empty value beneath a null).
struct Strs {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
    valid: Vec<bool>, // filled from the first null on
}

impl Strs {
    fn new(rows: usize, bytes_per_row: usize) -> Strs {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Strs { offsets, bytes: Vec::with_capacity(rows * bytes_per_row), valid: Vec::new() }
    }
    #[inline(always)]
    fn push(&mut self, value: Option<&str>) {
        match value {
            Some(v) => self.val(v),
            None => {
                if self.valid.is_empty() {
                    self.valid.resize(self.offsets.len() - 1, true);
                }
                self.valid.push(false);
                self.offsets.push(self.bytes.len() as i32);
            }
        }
    }
    #[inline(always)]
    fn val(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    /// Text known to be UTF-8 without a check per value (conn_id's hex digits, a TCP history's letters): `finish`
    /// checks the whole column once.
    #[inline(always)]
    fn bytes(&mut self, value: &[u8]) {
        self.bytes.extend_from_slice(value);
        self.offsets.push(i32::try_from(self.bytes.len()).expect("a string column under 2 GB"));
        if !self.valid.is_empty() {
            self.valid.push(true);
        }
    }
    fn finish(self) -> StringArray {
        let nulls = if self.valid.is_empty() { None } else { Some(NullBuffer::from(self.valid)) };
        // Checked by the constructor (UTF-8 and offsets): the bytes are whole `&str` values or ASCII (`bytes`).
        StringArray::new(OffsetBuffer::new(ScalarBuffer::from(self.offsets)), Buffer::from_vec(self.bytes), nulls)
    }
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

/// floor((to - from) / 1000) without 128-bit division unless the difference does not fit 64 bits.
fn micros_between(from: i64, to: i64) -> i64 {
    match to.checked_sub(from) {
        Some(d) => d.div_euclid(1000),
        None => (to as i128 - from as i128).div_euclid(1000) as i64,
    }
}

/// Row indexes ordered by (timestamp, conn_id), ties in index order. The rows come nearly in timestamp order, which
/// the stable sort finds in runs; conn_id compares as a big-endian number (the order of its bytes).
fn sorted(keys: impl Iterator<Item = (i64, ConnId)>) -> Vec<u32> {
    let mut keyed: Vec<(i64, u128, u32)> =
        keys.enumerate().map(|(i, (ts, id))| (ts, u128::from_be_bytes(id), i as u32)).collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// The insight columns of the connections table (None for UDP).
struct InsightColumns {
    conn_state: Strs,
    history: Strs,
    syn_to_synack_us: Prim<i64>,
    handshake_us: Prim<i64>,
    time_to_first_data_us: Prim<i64>,
    retransmissions: Prim<i64>,
    retransmissions_out: Prim<i64>,
    retransmissions_in: Prim<i64>,
    fast_retransmissions: Prim<i64>,
    spurious_retransmissions: Prim<i64>,
    out_of_order: Prim<i64>,
    dup_acks: Prim<i64>,
    dup_acks_out: Prim<i64>,
    dup_acks_in: Prim<i64>,
    lost_segments: Prim<i64>,
    retransmission_rate: Prim<f64>,
    zero_window_events: Prim<i64>,
    zero_window_events_out: Prim<i64>,
    zero_window_events_in: Prim<i64>,
    window_full_events: Prim<i64>,
    window_scale: Prim<i32>,
    window_scale_in: Prim<i32>,
    keepalives: Prim<i64>,
    rtt_min_us: Prim<i64>,
    rtt_avg_us: Prim<i64>,
    rtt_max_us: Prim<i64>,
    rtt_samples: Prim<i64>,
    rtt_jitter_us: Prim<i64>,
    bytes_total: Prim<i64>,
    goodput_bytes: Prim<i64>,
    rst_count: Prim<i64>,
    fin_count: Prim<i64>,
    close: Strs,
}

// One list of the insight columns, in table order: (column, Arrow kind, whether the insight is an Option).
macro_rules! insight_columns {
    ($m:ident) => {
        $m!(syn_to_synack_us, i64, opt; handshake_us, i64, opt; time_to_first_data_us, i64, opt;
            retransmissions, i64, val; retransmissions_out, i64, val; retransmissions_in, i64, val;
            fast_retransmissions, i64, val; spurious_retransmissions, i64, val; out_of_order, i64, val;
            dup_acks, i64, val; dup_acks_out, i64, val; dup_acks_in, i64, val; lost_segments, i64, val;
            retransmission_rate, f64, opt; zero_window_events, i64, val; zero_window_events_out, i64, val;
            zero_window_events_in, i64, val; window_full_events, i64, val; window_scale, i32, opt;
            window_scale_in, i32, opt; keepalives, i64, val; rtt_min_us, i64, opt; rtt_avg_us, i64, opt;
            rtt_max_us, i64, opt; rtt_samples, i64, val; rtt_jitter_us, i64, opt; bytes_total, i64, val;
            goodput_bytes, i64, val; rst_count, i64, val; fin_count, i64, val)
    };
}

impl InsightColumns {
    fn new(rows: usize) -> InsightColumns {
        macro_rules! build {
            ($($field:ident, $kind:ident, $o:ident);*) => {
                InsightColumns { conn_state: Strs::new(rows, 4), history: Strs::new(rows, 10), close: Strs::new(rows, 4),
                                 $($field: Prim::new(rows)),* }
            };
        }
        insight_columns!(build)
    }
    fn push(&mut self, insights: Option<&Insights<'_>>) {
        macro_rules! get {
            ($i:ident, $field:ident, opt) => { $i.$field };
            ($i:ident, $field:ident, val) => { Some($i.$field) };
        }
        macro_rules! push {
            ($($field:ident, $kind:ident, $o:ident);*) => {
                match insights {
                    Some(i) => {
                        self.conn_state.val(i.conn_state);
                        self.history.bytes(i.history);
                        $(self.$field.push(get!(i, $field, $o));)*
                        self.close.val(i.close);
                    }
                    None => {
                        self.conn_state.push(None);
                        self.history.push(None);
                        $(self.$field.push(None);)*
                        self.close.push(None);
                    }
                }
            };
        }
        insight_columns!(push)
    }
    fn finish(self, c: &mut Columns) {
        macro_rules! finish {
            ($($field:ident, $kind:ident, $o:ident);*) => {{
                c.str("conn_state", self.conn_state);
                c.str("history", self.history);
                $(c.$kind(stringify!($field), self.$field);)*
                c.str("close", self.close);
            }};
        }
        insight_columns!(finish)
    }
}

pub fn connections(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let flows = &tracker.flows;
    let order = sorted(flows.iter().zip(ids).map(|(f, i)| (f.first_ns, i.conn_id)));
    let n = order.len();
    let node = tracker.node.as_str();
    let mut node_col = Strs::new(n, node.len());
    let mut conn_id = Strs::new(n, 16);
    let mut proto = Strs::new(n, 3);
    let (mut src_ip, mut dst_ip) = (Strs::new(n, 14), Strs::new(n, 14));
    let (mut src_port, mut dst_port) = (Prim::<i32>::new(n), Prim::<i32>::new(n));
    let (mut first_ms, mut first_ns, mut last_ms, mut last_ns) = (Prim::new(n), Prim::new(n), Prim::new(n), Prim::new(n));
    let mut duration_us = Prim::new(n);
    let (mut packets_out, mut packets_in, mut bytes_out, mut bytes_in) =
        (Prim::new(n), Prim::new(n), Prim::new(n), Prim::new(n));
    let (mut payload_out, mut payload_in) = (Prim::new(n), Prim::new(n));
    let mut completeness = Prim::<i32>::new(n);
    let (mut isn_out, mut isn_in) = (Prim::new(n), Prim::new(n));
    let mut insights = InsightColumns::new(n);
    for &index in &order {
        let f = &flows[index as usize];
        let id = &ids[index as usize];
        node_col.val(node);
        conn_id.bytes(&id.conn_id);
        proto.val(proto_name(f.proto));
        src_ip.val(tracker.ip(id.src_ip));
        src_port.val(id.sport as i32);
        dst_ip.val(tracker.ip(id.dst_ip));
        dst_port.val(id.dport as i32);
        first_ms.val(ms(f.first_ns));
        first_ns.val(f.first_ns);
        last_ms.val(ms(f.last_ns));
        last_ns.val(f.last_ns);
        duration_us.val(micros_between(f.first_ns, f.last_ns));
        packets_out.val(f.packets_out);
        packets_in.val(f.packets_in);
        bytes_out.val(f.bytes_out);
        bytes_in.val(f.bytes_in);
        payload_out.val(f.payload_out);
        payload_in.val(f.payload_in);
        completeness.push((f.proto == IPPROTO_TCP).then_some(f.completeness));
        isn_out.push(f.isn_out);
        isn_in.push(f.isn_in);
        insights.push(f.tcp.as_ref().map(|t| t.insights()).as_ref());
    }
    let mut c = Columns::default();
    c.str("node", node_col);
    c.str("conn_id", conn_id);
    c.str("proto", proto);
    c.str("src_ip", src_ip);
    c.i32("src_port", src_port);
    c.str("dst_ip", dst_ip);
    c.i32("dst_port", dst_port);
    // ts and first_ts (and their _ns) are the same values: one array each, under both names.
    let first_ms: ArrayRef = Arc::new(first_ms.finish::<TimestampMillisecondType>().with_timezone("UTC"));
    let first_ns: ArrayRef = Arc::new(first_ns.finish::<Int64Type>());
    c.push("ts", first_ms.clone());
    c.push("ts_ns", first_ns.clone());
    c.push("first_ts", first_ms);
    c.push("first_ts_ns", first_ns);
    c.ts_ms("last_ts", last_ms);
    c.i64("last_ts_ns", last_ns);
    c.i64("duration_us", duration_us);
    c.i64("packets_out", packets_out);
    c.i64("packets_in", packets_in);
    c.i64("bytes_out", bytes_out);
    c.i64("bytes_in", bytes_in);
    c.i64("payload_bytes_out", payload_out);
    c.i64("payload_bytes_in", payload_in);
    c.i32("completeness", completeness);
    c.i64("isn_out", isn_out);
    c.i64("isn_in", isn_in);
    insights.finish(&mut c);
    c.batch()
}

/// The shared head of a traffic table: node, conn_id, times, endpoints (the client's side as the source).
struct HeadColumns {
    node: Strs,
    conn_id: Strs,
    ts_ms: Prim<i64>,
    ts_ns: Prim<i64>,
    src_ip: Strs,
    src_port: Prim<i32>,
    dst_ip: Strs,
    dst_port: Prim<i32>,
}

impl HeadColumns {
    fn new(rows: usize, node: &str) -> HeadColumns {
        HeadColumns { node: Strs::new(rows, node.len()), conn_id: Strs::new(rows, 16), ts_ms: Prim::new(rows),
                      ts_ns: Prim::new(rows), src_ip: Strs::new(rows, 14), src_port: Prim::new(rows),
                      dst_ip: Strs::new(rows, 14), dst_port: Prim::new(rows) }
    }
    fn push(&mut self, tracker: &Tracker, ident: &Identity, ts_ns: i64, client_outbound: bool) {
        self.node.val(&tracker.node);
        self.conn_id.bytes(&ident.conn_id);
        self.ts_ms.val(ms(ts_ns));
        self.ts_ns.val(ts_ns);
        let (src, dst) = if client_outbound {
            ((ident.src_ip, ident.sport), (ident.dst_ip, ident.dport))
        } else {
            ((ident.dst_ip, ident.dport), (ident.src_ip, ident.sport))
        };
        self.src_ip.val(tracker.ip(src.0));
        self.src_port.val(src.1 as i32);
        self.dst_ip.val(tracker.ip(dst.0));
        self.dst_port.val(dst.1 as i32);
    }
    fn finish(self, c: &mut Columns) {
        c.str("node", self.node);
        c.str("conn_id", self.conn_id);
        c.ts_ms("ts", self.ts_ms);
        c.i64("ts_ns", self.ts_ns);
        c.str("src_ip", self.src_ip);
        c.i32("src_port", self.src_port);
        c.str("dst_ip", self.dst_ip);
        c.i32("dst_port", self.dst_port);
    }
}

fn latency(from: i64, to: Option<i64>) -> i64 {
    micros_between(from, to.unwrap_or(0))
}

pub fn dns(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let rows = &tracker.app.dns.rows;
    let order = sorted(rows.iter().map(|r| (r.ts_ns, ids[r.flow as usize].conn_id)));
    let n = order.len();
    let mut head = HeadColumns::new(n, &tracker.node);
    let mut transaction_id = Prim::<i32>::new(n);
    let mut qname = Strs::new(n, 24);
    let mut qtype = Strs::new(n, 2);
    let mut rcode = Prim::<i32>::new(n);
    let mut rcode_name = Strs::new(n, 7);
    let mut answers = ListBuilder::with_capacity(StringBuilder::with_capacity(n, n * 16), n);
    let mut ttls = ListBuilder::with_capacity(Int64Builder::with_capacity(n), n);
    let mut latency_us = Prim::new(n);
    let mut transport = Strs::new(n, 3);
    let mut truncated = Vec::with_capacity(n);
    let mut response_ts_ns = Prim::new(n);
    for &index in &order {
        let r = &rows[index as usize];
        head.push(tracker, &ids[r.flow as usize], r.ts_ns, r.client_outbound);
        transaction_id.val(r.transaction_id as i32);
        qname.val(&r.qname);
        qtype.val(&crate::dns::type_name(r.qtype));
        rcode.push(r.rcode.map(|v| v as i32));
        rcode_name.push(r.rcode.map(crate::dns::rcode_name).as_deref());
        if r.rcode.is_some() {
            for a in &r.answers {
                answers.values().append_value(&a.rdata);
                ttls.values().append_value(a.ttl);
            }
        }
        answers.append(r.rcode.is_some());
        ttls.append(r.rcode.is_some());
        latency_us.push((r.rcode.is_some() && r.answered_query).then(|| latency(r.ts_ns, r.response_ts_ns)));
        transport.val(r.transport);
        truncated.push(Some(r.truncated));
        response_ts_ns.push(r.response_ts_ns);
    }
    let mut c = Columns::default();
    head.finish(&mut c);
    c.i32("transaction_id", transaction_id);
    c.str("qname", qname);
    c.str("qtype", qtype);
    c.i32("rcode", rcode);
    c.str("rcode_name", rcode_name);
    c.push("answers", Arc::new(answers.finish()));
    c.push("ttls", Arc::new(ttls.finish()));
    c.i64("latency_us", latency_us);
    c.str("transport", transport);
    c.bool("truncated", truncated);
    c.i64("response_ts_ns", response_ts_ns);
    c.batch()
}

pub fn http(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let rows = &tracker.app.http.rows;
    let texts = tracker.app.http.texts.as_str();
    let order = sorted(rows.iter().map(|r| (r.ts_ns, ids[r.flow as usize].conn_id)));
    let n = order.len();
    let mut head = HeadColumns::new(n, &tracker.node);
    let mut method = Strs::new(n, 4);
    let mut host = Strs::new(n, 16);
    let mut path = Strs::new(n, 24);
    let mut version = Strs::new(n, 8);
    let mut status = Prim::<i32>::new(n);
    let mut reason = Strs::new(n, 2);
    let mut latency_us = Prim::new(n);
    let mut request_bytes = Prim::new(n);
    let mut response_bytes = Prim::new(n);
    let mut response_complete = Vec::with_capacity(n);
    let mut user_agent = Strs::new(n, 16);
    let mut content_type = Strs::new(n, 16);
    let mut response_ts_ns = Prim::new(n);
    for &index in &order {
        let r = &rows[index as usize];
        head.push(tracker, &ids[r.flow as usize], r.ts_ns, r.client_outbound);
        let extra = r.extra(texts);
        method.val(r.method.of(texts));
        host.push(extra.host);
        path.val(r.request_target.of(texts));
        version.val(r.http_version.of(texts));
        status.push(r.status_code);
        reason.push(r.reason_phrase.map(|s| s.of(texts)));
        latency_us.push(r.status_code.map(|_| latency(r.ts_ns, r.response_ts_ns)));
        request_bytes.val(r.request_bytes);
        response_bytes.push(r.status_code.map(|_| r.response_bytes));
        response_complete.push(r.status_code.map(|_| r.response_complete));
        user_agent.push(extra.user_agent);
        content_type.push(extra.content_type);
        response_ts_ns.push(r.response_ts_ns);
    }
    let mut c = Columns::default();
    head.finish(&mut c);
    c.str("method", method);
    c.str("host", host);
    c.str("path", path);
    c.str("version", version);
    c.i32("status", status);
    c.str("reason", reason);
    c.i64("latency_us", latency_us);
    c.i64("request_bytes", request_bytes);
    c.i64("response_bytes", response_bytes);
    c.bool("response_complete", response_complete);
    c.str("user_agent", user_agent);
    c.str("content_type", content_type);
    c.i64("response_ts_ns", response_ts_ns);
    c.batch()
}

pub fn tls(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    use crate::tls::{alert_text, cipher_name, version_name};
    let rows = &tracker.app.tls.rows;
    let order = sorted(rows.iter().map(|r| (r.ts_ns, ids[r.flow as usize].conn_id)));
    let n = order.len();
    let mut head = HeadColumns::new(n, &tracker.node);
    let mut sni = Strs::new(n, 16);
    let mut version = Strs::new(n, 7);
    let mut client_versions = ListBuilder::with_capacity(StringBuilder::new(), n);
    let mut alpn = ListBuilder::with_capacity(StringBuilder::new(), n);
    let mut alpn_selected = Strs::new(n, 2);
    let mut cipher = Strs::new(n, 24);
    let mut established = Vec::with_capacity(n);
    let mut alert = Strs::new(n, 0);
    let mut alert_from = Strs::new(n, 0);
    let mut server_hello_ts_ns = Prim::new(n);
    for &index in &order {
        let r = &rows[index as usize];
        head.push(tracker, &ids[r.flow as usize], r.ts_ns, r.client_outbound);
        let offered: &[u16] = match &r.client_hello {
            Some(h) if !h.supported_versions.is_empty() => &h.supported_versions,
            Some(h) => std::slice::from_ref(&h.legacy_version),
            None => &[],
        };
        sni.push(r.client_hello.as_ref().and_then(|h| h.server_name.as_deref()));
        version.push(match &r.server_hello {
            Some(s) => Some(version_name(match s.selected_version {
                Some(v) if v != 0 => v,
                _ => s.legacy_version,
            })),
            None => offered.iter().max().map(|v| version_name(*v)),
        }.as_deref());
        if let Some(h) = &r.client_hello {
            for v in offered {
                client_versions.values().append_value(version_name(*v));
            }
            for name in &h.alpn {
                alpn.values().append_value(name);
            }
        }
        client_versions.append(r.client_hello.is_some());
        alpn.append(r.client_hello.is_some());
        alpn_selected.push(r.server_hello.as_ref().and_then(|s| s.alpn.as_deref()));
        cipher.push(r.server_hello.as_ref().map(|s| cipher_name(s.cipher_suite)).as_deref());
        established.push(Some(r.server_hello.is_some() && !r.fatal_after_hello));
        alert.push(r.alert.map(|(l, d)| alert_text(l, d)).as_deref());
        alert_from.push(r.alert_from);
        server_hello_ts_ns.push(r.server_hello_ts_ns);
    }
    let mut c = Columns::default();
    head.finish(&mut c);
    c.str("sni", sni);
    c.str("version", version);
    c.push("client_versions", Arc::new(client_versions.finish()));
    c.push("alpn", Arc::new(alpn.finish()));
    c.str("alpn_selected", alpn_selected);
    c.str("cipher", cipher);
    c.bool("established", established);
    c.str("alert", alert);
    c.str("alert_from", alert_from);
    c.i64("server_hello_ts_ns", server_hello_ts_ns);
    c.batch()
}

/// Column names per table, for the schema check.
pub fn column_names() -> Vec<(&'static str, Vec<String>)> {
    let mut tracker = Tracker::new("x");
    let ids = tracker.identities();
    let names = |b: RecordBatch| b.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let _ = DataType::Null;
    vec![("connections", names(connections(&tracker, &ids))), ("dns", names(dns(&tracker, &ids))),
         ("http", names(http(&tracker, &ids))), ("tls", names(tls(&tracker, &ids)))]
}
