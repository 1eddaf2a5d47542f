//! The rows of every table as Arrow record batches. Column names and types follow freezeframe.schemas (the single
//! source of truth): Python checks every batch against the schema, fills the Kubernetes enrichment columns (null
//! here, joined later) and rejects anything else missing. A new column is one ``push_*`` line below.

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
use arrow_array::types::{ArrowPrimitiveType, Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{ArrayRef, BooleanArray, PrimitiveArray, RecordBatch};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Field, Schema};

use crate::conn::{proto_name, Identity, Tracker};
use crate::decode::IPPROTO_TCP;

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
    /// The values' bytes are counted first, so the column's buffer is allocated once instead of grown by doubling
    /// (the same builder `collect` uses, so the same array).
    pub fn str<S: AsRef<str>>(&mut self, name: &str, values: impl Iterator<Item = Option<S>> + Clone) {
        let bytes: usize = values.clone().map(|v| v.as_ref().map_or(0, |s| s.as_ref().len())).sum();
        let mut builder = StringBuilder::with_capacity(values.size_hint().0, bytes);
        builder.extend(values);
        self.push(name, Arc::new(builder.finish()));
    }
    pub fn i64(&mut self, name: &str, values: impl Iterator<Item = Option<i64>>) {
        self.push(name, Arc::new(primitive::<Int64Type>(values)));
    }
    pub fn i32(&mut self, name: &str, values: impl Iterator<Item = Option<i32>>) {
        self.push(name, Arc::new(primitive::<Int32Type>(values)));
    }
    pub fn f64(&mut self, name: &str, values: impl Iterator<Item = Option<f64>>) {
        self.push(name, Arc::new(primitive::<Float64Type>(values)));
    }
    pub fn bool(&mut self, name: &str, values: impl Iterator<Item = Option<bool>>) {
        self.push(name, Arc::new(values.collect::<BooleanArray>()));
    }
    pub fn ts_ms(&mut self, name: &str, values: impl Iterator<Item = Option<i64>>) {
        let array = primitive::<TimestampMillisecondType>(values).with_timezone("UTC");
        self.push(name, Arc::new(array));
    }
    pub fn str_list<'a>(&mut self, name: &str, values: impl Iterator<Item = Option<Vec<&'a str>>>) {
        let mut builder = ListBuilder::new(StringBuilder::new());
        for value in values {
            match value {
                Some(items) => {
                    for item in items {
                        builder.values().append_value(item);
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        self.push(name, Arc::new(builder.finish()));
    }
    pub fn i64_list(&mut self, name: &str, values: impl Iterator<Item = Option<Vec<i64>>>) {
        let mut builder = ListBuilder::new(Int64Builder::new());
        for value in values {
            match value {
                Some(items) => {
                    for item in items {
                        builder.values().append_value(item);
                    }
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        self.push(name, Arc::new(builder.finish()));
    }
    pub fn batch(self) -> RecordBatch {
        let schema = Arc::new(Schema::new(self.fields));
        RecordBatch::try_new(schema, self.arrays).expect("columns of equal length")
    }
    pub fn names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name().clone()).collect()
    }
}

/// The array `values.collect()` builds (nulls where None, zero beneath them, no validity buffer without a null),
/// without appending a validity bit per value: most columns have no null at all.
fn primitive<T: ArrowPrimitiveType>(values: impl Iterator<Item = Option<T::Native>>) -> PrimitiveArray<T> {
    let mut out: Vec<T::Native> = Vec::with_capacity(values.size_hint().0);
    let mut valid: Vec<bool> = Vec::new(); // filled from the first null on
    for value in values {
        match value {
            Some(v) => {
                out.push(v);
                if !valid.is_empty() {
                    valid.push(true);
                }
            }
            None => {
                if valid.is_empty() {
                    valid.resize(out.len(), true);
                }
                out.push(T::Native::default());
                valid.push(false);
            }
        }
    }
    let nulls = if valid.is_empty() { None } else { Some(NullBuffer::from(valid)) };
    PrimitiveArray::new(out.into(), nulls)
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

pub fn connections(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let mut order: Vec<usize> = (0..tracker.flows.len()).collect();
    order.sort_by(|&a, &b| {
        (tracker.flows[a].first_ns, &ids[a].conn_id).cmp(&(tracker.flows[b].first_ns, &ids[b].conn_id))
    });
    let flows: Vec<_> = order.iter().map(|&i| &tracker.flows[i]).collect();
    let idents: Vec<&Identity> = order.iter().map(|&i| &ids[i]).collect();
    let insights: Vec<_> = flows.iter().map(|f| f.tcp.as_ref().map(|t| t.insights())).collect();
    let mut c = Columns::default();
    let node = tracker.node.as_str();
    c.str("node", flows.iter().map(|_| Some(node)));
    c.str("conn_id", idents.iter().map(|i| Some(i.conn_id.as_str())));
    c.str("proto", flows.iter().map(|f| Some(proto_name(f.proto))));
    c.str("src_ip", idents.iter().map(|i| Some(i.src_ip.as_str())));
    c.i32("src_port", idents.iter().map(|i| Some(i.sport as i32)));
    c.str("dst_ip", idents.iter().map(|i| Some(i.dst_ip.as_str())));
    c.i32("dst_port", idents.iter().map(|i| Some(i.dport as i32)));
    c.ts_ms("ts", flows.iter().map(|f| Some(ms(f.first_ns))));
    c.i64("ts_ns", flows.iter().map(|f| Some(f.first_ns)));
    c.ts_ms("first_ts", flows.iter().map(|f| Some(ms(f.first_ns))));
    c.i64("first_ts_ns", flows.iter().map(|f| Some(f.first_ns)));
    c.ts_ms("last_ts", flows.iter().map(|f| Some(ms(f.last_ns))));
    c.i64("last_ts_ns", flows.iter().map(|f| Some(f.last_ns)));
    c.i64("duration_us", flows.iter().map(|f| Some((f.last_ns as i128 - f.first_ns as i128).div_euclid(1000) as i64)));
    c.i64("packets_out", flows.iter().map(|f| Some(f.packets_out)));
    c.i64("packets_in", flows.iter().map(|f| Some(f.packets_in)));
    c.i64("bytes_out", flows.iter().map(|f| Some(f.bytes_out)));
    c.i64("bytes_in", flows.iter().map(|f| Some(f.bytes_in)));
    c.i64("payload_bytes_out", flows.iter().map(|f| Some(f.payload_out)));
    c.i64("payload_bytes_in", flows.iter().map(|f| Some(f.payload_in)));
    c.i32("completeness", flows.iter().map(|f| (f.proto == IPPROTO_TCP).then_some(f.completeness)));
    c.i64("isn_out", flows.iter().map(|f| f.isn_out));
    c.i64("isn_in", flows.iter().map(|f| f.isn_in));
    macro_rules! ins {
        ($kind:ident, $name:literal, $field:ident) => {
            c.$kind($name, insights.iter().map(|i| i.as_ref().map(|i| i.$field)));
        };
        ($kind:ident, $name:literal, $field:ident, opt) => {
            c.$kind($name, insights.iter().map(|i| i.as_ref().and_then(|i| i.$field)));
        };
    }
    c.str("conn_state", insights.iter().map(|i| i.as_ref().map(|i| i.conn_state)));
    c.str("history", insights.iter().map(|i| i.as_ref().map(|i| i.history.as_str())));
    ins!(i64, "syn_to_synack_us", syn_to_synack_us, opt);
    ins!(i64, "handshake_us", handshake_us, opt);
    ins!(i64, "time_to_first_data_us", time_to_first_data_us, opt);
    ins!(i64, "retransmissions", retransmissions);
    ins!(i64, "retransmissions_out", retransmissions_out);
    ins!(i64, "retransmissions_in", retransmissions_in);
    ins!(i64, "fast_retransmissions", fast_retransmissions);
    ins!(i64, "spurious_retransmissions", spurious_retransmissions);
    ins!(i64, "out_of_order", out_of_order);
    ins!(i64, "dup_acks", dup_acks);
    ins!(i64, "dup_acks_out", dup_acks_out);
    ins!(i64, "dup_acks_in", dup_acks_in);
    ins!(i64, "lost_segments", lost_segments);
    ins!(f64, "retransmission_rate", retransmission_rate, opt);
    ins!(i64, "zero_window_events", zero_window_events);
    ins!(i64, "zero_window_events_out", zero_window_events_out);
    ins!(i64, "zero_window_events_in", zero_window_events_in);
    ins!(i64, "window_full_events", window_full_events);
    ins!(i32, "window_scale", window_scale, opt);
    ins!(i32, "window_scale_in", window_scale_in, opt);
    ins!(i64, "keepalives", keepalives);
    ins!(i64, "rtt_min_us", rtt_min_us, opt);
    ins!(i64, "rtt_avg_us", rtt_avg_us, opt);
    ins!(i64, "rtt_max_us", rtt_max_us, opt);
    ins!(i64, "rtt_samples", rtt_samples);
    ins!(i64, "rtt_jitter_us", rtt_jitter_us, opt);
    ins!(i64, "bytes_total", bytes_total);
    ins!(i64, "goodput_bytes", goodput_bytes);
    ins!(i64, "rst_count", rst_count);
    ins!(i64, "fin_count", fin_count);
    c.str("close", insights.iter().map(|i| i.as_ref().map(|i| i.close)));
    c.batch()
}

/// The shared head of a traffic table (rows already in their final order): node, conn_id, times, endpoints.
struct Head<'a> {
    ts_ns: i64,
    ident: &'a Identity,
    client_outbound: bool,
}

fn order_rows<'a>(ids: &'a [Identity], keys: impl Iterator<Item = (i64, u32, bool)>) -> (Vec<usize>, Vec<Head<'a>>) {
    let heads: Vec<Head<'a>> = keys.map(|(ts_ns, flow, client_outbound)| Head { ts_ns, ident: &ids[flow as usize],
                                                                              client_outbound }).collect();
    let mut order: Vec<usize> = (0..heads.len()).collect();
    order.sort_by(|&a, &b| (heads[a].ts_ns, &heads[a].ident.conn_id).cmp(&(heads[b].ts_ns, &heads[b].ident.conn_id)));
    (order, heads)
}

fn head_columns(c: &mut Columns, node: &str, order: &[usize], heads: &[Head<'_>]) {
    let rows: Vec<&Head<'_>> = order.iter().map(|&i| &heads[i]).collect();
    c.str("node", rows.iter().map(|_| Some(node)));
    c.str("conn_id", rows.iter().map(|h| Some(h.ident.conn_id.as_str())));
    c.ts_ms("ts", rows.iter().map(|h| Some(ms(h.ts_ns))));
    c.i64("ts_ns", rows.iter().map(|h| Some(h.ts_ns)));
    fn side<'b>(h: &Head<'b>, src: bool) -> (&'b str, i32) {
        let i = h.ident;
        if h.client_outbound == src { (i.src_ip.as_str(), i.sport as i32) } else { (i.dst_ip.as_str(), i.dport as i32) }
    }
    c.str("src_ip", rows.iter().map(|h| Some(side(h, true).0)));
    c.i32("src_port", rows.iter().map(|h| Some(side(h, true).1)));
    c.str("dst_ip", rows.iter().map(|h| Some(side(h, false).0)));
    c.i32("dst_port", rows.iter().map(|h| Some(side(h, false).1)));
}

fn latency(from: i64, to: Option<i64>) -> i64 {
    (to.unwrap_or(0) as i128 - from as i128).div_euclid(1000) as i64
}

pub fn dns(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let rows = &tracker.app.dns.rows;
    let (order, heads) = order_rows(ids, rows.iter().map(|r| (r.ts_ns, r.flow, r.client_outbound)));
    let mut c = Columns::default();
    head_columns(&mut c, &tracker.node, &order, &heads);
    let rows: Vec<_> = order.iter().map(|&i| &rows[i]).collect();
    c.i32("transaction_id", rows.iter().map(|r| Some(r.transaction_id as i32)));
    c.str("qname", rows.iter().map(|r| Some(r.qname.as_str())));
    c.str("qtype", rows.iter().map(|r| Some(crate::dns::type_name(r.qtype))));
    c.i32("rcode", rows.iter().map(|r| r.rcode.map(|v| v as i32)));
    c.str("rcode_name", rows.iter().map(|r| r.rcode.map(crate::dns::rcode_name)));
    c.str_list("answers", rows.iter().map(|r| r.rcode.map(|_| r.answers.iter().map(|a| a.rdata.as_str()).collect())));
    c.i64_list("ttls", rows.iter().map(|r| r.rcode.map(|_| r.answers.iter().map(|a| a.ttl).collect())));
    c.i64("latency_us", rows.iter().map(|r| {
        if r.rcode.is_some() && r.answered_query { Some(latency(r.ts_ns, r.response_ts_ns)) } else { None }
    }));
    c.str("transport", rows.iter().map(|r| Some(r.transport)));
    c.bool("truncated", rows.iter().map(|r| Some(r.truncated)));
    c.i64("response_ts_ns", rows.iter().map(|r| r.response_ts_ns));
    c.batch()
}

pub fn http(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    let rows = &tracker.app.http.rows;
    let (order, heads) = order_rows(ids, rows.iter().map(|r| (r.ts_ns, r.flow, r.client_outbound)));
    let mut c = Columns::default();
    head_columns(&mut c, &tracker.node, &order, &heads);
    let rows: Vec<_> = order.iter().map(|&i| &rows[i]).collect();
    let extra: Vec<_> = rows.iter().map(|r| r.extra()).collect();
    c.str("method", rows.iter().map(|r| Some(r.method.as_str())));
    c.str("host", extra.iter().map(|e| e.host));
    c.str("path", rows.iter().map(|r| Some(r.request_target.as_str())));
    c.str("version", rows.iter().map(|r| Some(r.http_version.as_str())));
    c.i32("status", rows.iter().map(|r| r.status_code));
    c.str("reason", rows.iter().map(|r| r.reason_phrase.as_deref()));
    c.i64("latency_us", rows.iter().map(|r| r.status_code.map(|_| latency(r.ts_ns, r.response_ts_ns))));
    c.i64("request_bytes", rows.iter().map(|r| Some(r.request_bytes)));
    c.i64("response_bytes", rows.iter().map(|r| r.status_code.map(|_| r.response_bytes)));
    c.bool("response_complete", rows.iter().map(|r| r.status_code.map(|_| r.response_complete)));
    c.str("user_agent", extra.iter().map(|e| e.user_agent));
    c.str("content_type", extra.iter().map(|e| e.content_type));
    c.i64("response_ts_ns", rows.iter().map(|r| r.response_ts_ns));
    c.batch()
}

pub fn tls(tracker: &Tracker, ids: &[Identity]) -> RecordBatch {
    use crate::tls::{alert_text, cipher_name, version_name};
    let rows = &tracker.app.tls.rows;
    let (order, heads) = order_rows(ids, rows.iter().map(|r| (r.ts_ns, r.flow, r.client_outbound)));
    let mut c = Columns::default();
    head_columns(&mut c, &tracker.node, &order, &heads);
    let rows: Vec<_> = order.iter().map(|&i| &rows[i]).collect();
    let offered: Vec<Vec<u16>> = rows.iter().map(|r| match &r.client_hello {
        Some(h) if !h.supported_versions.is_empty() => h.supported_versions.clone(),
        Some(h) => vec![h.legacy_version],
        None => Vec::new(),
    }).collect();
    c.str("sni", rows.iter().map(|r| r.client_hello.as_ref().and_then(|h| h.server_name.as_deref())));
    c.str("version", rows.iter().zip(&offered).map(|(r, offered)| match &r.server_hello {
        Some(s) => Some(version_name(match s.selected_version {
            Some(v) if v != 0 => v,
            _ => s.legacy_version,
        })),
        None => offered.iter().max().map(|v| version_name(*v)),
    }));
    let client_versions: Vec<Option<Vec<String>>> = rows.iter().zip(&offered)
        .map(|(r, offered)| r.client_hello.as_ref().map(|_| offered.iter().map(|v| version_name(*v)).collect()))
        .collect();
    c.str_list("client_versions", client_versions.iter().map(|v| v.as_ref().map(|v| v.iter().map(|s| s.as_str()).collect())));
    c.str_list("alpn", rows.iter().map(|r| r.client_hello.as_ref().map(|h| h.alpn.iter().map(|s| s.as_str()).collect())));
    c.str("alpn_selected", rows.iter().map(|r| r.server_hello.as_ref().and_then(|s| s.alpn.as_deref())));
    c.str("cipher", rows.iter().map(|r| r.server_hello.as_ref().map(|s| cipher_name(s.cipher_suite))));
    c.bool("established", rows.iter().map(|r| Some(r.server_hello.is_some() && !r.fatal_after_hello)));
    c.str("alert", rows.iter().map(|r| r.alert.map(|(l, d)| alert_text(l, d))));
    c.str("alert_from", rows.iter().map(|r| r.alert_from));
    c.i64("server_hello_ts_ns", rows.iter().map(|r| r.server_hello_ts_ns));
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
