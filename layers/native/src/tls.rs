//! TLS records and the handshake's hellos and plaintext alerts, one row per handshake: a port of
//! freezeframe.dissect.tls.

use crate::apps::AppStats;
use crate::dns::ascii_backslash;
use crate::store::Chunked;

const MAX_RECORD: usize = 16384 + 2048;
const MAX_HANDSHAKE: usize = 64 * 1024;

pub fn version_name(version: u16) -> String {
    match version {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        _ => format!("0x{version:04X}"),
    }
}

pub fn cipher_name(suite: u16) -> String {
    let name = match suite {
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0xC02B => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xC02C => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xC02F => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xC030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xCCA8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xCCA9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0x009C => "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009D => "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x002F => "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
        _ => return format!("0x{suite:04X}"),
    };
    name.into()
}

pub fn alert_text(level: u8, description: u8) -> String {
    let level = match level {
        1 => "warning".to_string(),
        2 => "fatal".to_string(),
        other => other.to_string(),
    };
    let description = match description {
        0 => "close_notify", 10 => "unexpected_message", 20 => "bad_record_mac", 21 => "decryption_failed",
        22 => "record_overflow", 30 => "decompression_failure", 40 => "handshake_failure", 41 => "no_certificate",
        42 => "bad_certificate", 43 => "unsupported_certificate", 44 => "certificate_revoked",
        45 => "certificate_expired", 46 => "certificate_unknown", 47 => "illegal_parameter", 48 => "unknown_ca",
        49 => "access_denied", 50 => "decode_error", 51 => "decrypt_error", 60 => "export_restriction",
        70 => "protocol_version", 71 => "insufficient_security", 80 => "internal_error",
        86 => "inappropriate_fallback", 90 => "user_canceled", 100 => "no_renegotiation",
        109 => "missing_extension", 110 => "unsupported_extension", 112 => "unrecognized_name",
        113 => "bad_certificate_status_response", 115 => "unknown_psk_identity", 116 => "certificate_required",
        120 => "no_application_protocol",
        other => return format!("{level}:{other}"),
    };
    format!("{level}:{description}")
}

fn is_grease(value: u16) -> bool {
    value & 0x0F0F == 0x0A0A && value >> 8 == value & 0xFF
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn vector(body: &[u8], offset: usize, length_size: usize) -> Option<(&[u8], usize)> {
    if offset + length_size > body.len() {
        return None;
    }
    let length = if length_size == 1 { body[offset] as usize } else { be16(body, offset) as usize };
    let end = offset + length_size + length;
    if end > body.len() {
        return None;
    }
    Some((&body[offset + length_size..end], end))
}

/// Extensions, the first of each type kept (dict.setdefault).
fn extensions(body: &[u8], offset: usize) -> Option<Vec<(u16, &[u8])>> {
    if offset == body.len() {
        return Some(Vec::new());
    }
    let (data, _) = vector(body, offset, 2)?;
    let mut out: Vec<(u16, &[u8])> = Vec::new();
    let mut position = 0;
    while position < data.len() {
        if position + 4 > data.len() {
            return None;
        }
        let ext_type = be16(data, position);
        let length = be16(data, position + 2) as usize;
        let end = position + 4 + length;
        if end > data.len() {
            return None;
        }
        if !out.iter().any(|(t, _)| *t == ext_type) {
            out.push((ext_type, &data[position + 4..end]));
        }
        position = end;
    }
    Some(out)
}

fn ext<'a>(list: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    list.iter().find(|(t, _)| *t == kind).map(|(_, d)| *d)
}

fn alpn_names(data: &[u8]) -> Option<Vec<String>> {
    let (body, _) = vector(data, 0, 2)?;
    let mut names = Vec::new();
    let mut position = 0;
    while position < body.len() {
        let (name, next) = vector(body, position, 1)?;
        names.push(ascii_backslash(name));
        position = next;
    }
    Some(names)
}

/// None: malformed (Python returns None from _vector); Some(None): no host_name.
fn server_name(data: &[u8]) -> Option<Option<String>> {
    let (body, _) = vector(data, 0, 2)?;
    let mut position = 0;
    while position < body.len() {
        let name_type = body[position];
        let (name, next) = vector(body, position + 1, 2)?;
        if name_type == 0 {
            return Some(Some(ascii_backslash(name)));
        }
        position = next;
    }
    Some(None)
}

pub struct ClientHello {
    pub legacy_version: u16,
    pub server_name: Option<String>,
    pub alpn: Vec<String>,
    pub supported_versions: Vec<u16>,
}

pub struct ServerHello {
    pub legacy_version: u16,
    pub cipher_suite: u16,
    pub selected_version: Option<u16>,
    pub alpn: Option<String>,
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    if body.len() < 34 {
        return None;
    }
    let legacy_version = be16(body, 0);
    let (_, after_session) = vector(body, 34, 1)?;
    let (_, after_ciphers) = vector(body, after_session, 2)?;
    let (_, after_compression) = vector(body, after_ciphers, 1)?;
    let list = extensions(body, after_compression)?;
    // _server_name returning None (malformed) leaves server_name None without failing the hello.
    let server_name = ext(&list, 0).and_then(|d| server_name(d).flatten());
    let mut alpn = Vec::new();
    if let Some(d) = ext(&list, 16) {
        alpn = alpn_names(d)?;
    }
    let mut versions = Vec::new();
    if let Some(d) = ext(&list, 43) {
        let (raw, _) = vector(d, 0, 1)?;
        if raw.len() % 2 != 0 {
            return None;
        }
        for i in (0..raw.len()).step_by(2) {
            let v = be16(raw, i);
            if !is_grease(v) {
                versions.push(v);
            }
        }
    }
    Some(ClientHello { legacy_version, server_name, alpn, supported_versions: versions })
}

fn parse_server_hello(body: &[u8]) -> Option<ServerHello> {
    if body.len() < 34 {
        return None;
    }
    let legacy_version = be16(body, 0);
    let (_, offset) = vector(body, 34, 1)?;
    if offset + 3 > body.len() {
        return None;
    }
    let cipher_suite = be16(body, offset);
    let list = extensions(body, offset + 3)?;
    let selected_version = ext(&list, 43).filter(|s| s.len() == 2).map(|s| be16(s, 0));
    let mut alpn = None;
    if let Some(d) = ext(&list, 16) {
        if let Some(names) = alpn_names(d) {
            alpn = names.into_iter().next();
        }
    }
    Some(ServerHello { legacy_version, cipher_suite, selected_version, alpn })
}

pub struct Row {
    pub ts_ns: i64,
    pub flow: u32,
    pub client_outbound: bool,
    pub client_hello: Option<ClientHello>,
    pub server_hello: Option<ServerHello>,
    pub server_hello_ts_ns: Option<i64>,
    pub alert: Option<(u8, u8)>,
    pub alert_from: Option<&'static str>,
    pub fatal_after_hello: bool,
}

#[derive(Default)]
pub struct TlsTracker {
    pub rows: Chunked<Row>,
}

#[derive(Default)]
struct Side {
    buffer: Vec<u8>,
    handshake: Vec<u8>,
    done: bool,
}

#[derive(Default)]
pub struct TlsConnection {
    row: Option<usize>,
    from_client: Side,
    from_server: Side,
}

impl TlsConnection {
    #[allow(clippy::too_many_arguments)]
    pub fn data(&mut self, tracker: &mut TlsTracker, stats: &mut AppStats, flow: u32, client_outbound: bool,
                from_client: bool, ts_ns: i64, chunk: &[u8]) {
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        if side.done {
            return;
        }
        let mut buffer = std::mem::take(&mut side.buffer);
        buffer.extend_from_slice(chunk);
        let mut start = 0;
        while buffer.len() - start >= 5 {
            let content_type = buffer[start];
            let length = be16(&buffer, start + 3) as usize;
            if buffer[start + 1] != 3 || length > MAX_RECORD || !(20..=24).contains(&content_type) {
                stats.tls_malformed += 1;
                let side = if from_client { &mut self.from_client } else { &mut self.from_server };
                side.done = true;
                return;
            }
            stats.tls_records += 1;
            if content_type == 23 || content_type == 20 {
                let side = if from_client { &mut self.from_client } else { &mut self.from_server };
                side.done = true;
                return;
            }
            if buffer.len() - start < 5 + length {
                break;
            }
            let fragment = &buffer[start + 5..start + 5 + length];
            if content_type == 21 {
                self.alert(tracker, from_client, fragment);
            } else if content_type == 22
                && !self.handshake(tracker, flow, client_outbound, from_client, ts_ns, fragment) {
                stats.tls_malformed += 1;
                let side = if from_client { &mut self.from_client } else { &mut self.from_server };
                side.done = true;
                return;
            }
            start += 5 + length;
        }
        buffer.drain(..start);
        crate::http::release(&mut buffer);
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        side.buffer = buffer;
    }

    fn alert(&mut self, tracker: &mut TlsTracker, from_client: bool, fragment: &[u8]) {
        if fragment.len() != 2 {
            return;
        }
        let Some(index) = self.row else { return };
        let row = &mut tracker.rows[index];
        if row.alert.is_none() {
            row.alert = Some((fragment[0], fragment[1]));
            row.alert_from = Some(if from_client { "client" } else { "server" });
        }
        if fragment[0] == 2 && row.server_hello.is_some() {
            row.fatal_after_hello = true;
        }
    }

    fn ensure_row(&mut self, tracker: &mut TlsTracker, flow: u32, client_outbound: bool, ts_ns: i64) -> usize {
        if let Some(index) = self.row {
            return index;
        }
        tracker.rows.push(Row { ts_ns, flow, client_outbound, client_hello: None, server_hello: None,
                                server_hello_ts_ns: None, alert: None, alert_from: None, fatal_after_hello: false });
        self.row = Some(tracker.rows.len() - 1);
        tracker.rows.len() - 1
    }

    fn handshake(&mut self, tracker: &mut TlsTracker, flow: u32, client_outbound: bool, from_client: bool, ts_ns: i64,
                 fragment: &[u8]) -> bool {
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        let mut data = std::mem::take(&mut side.handshake);
        data.extend_from_slice(fragment);
        let mut start = 0;
        while data.len() - start >= 4 {
            let msg_type = data[start];
            let length = ((data[start + 1] as usize) << 16) | be16(&data, start + 2) as usize;
            if length > MAX_HANDSHAKE {
                return false;
            }
            if data.len() - start < 4 + length {
                break;
            }
            let body = &data[start + 4..start + 4 + length];
            if msg_type == 1 && from_client {
                let Some(hello) = parse_client_hello(body) else { return false };
                let has = self.row.is_some_and(|i| tracker.rows[i].client_hello.is_some());
                if !has {
                    let index = self.ensure_row(tracker, flow, client_outbound, ts_ns);
                    tracker.rows[index].client_hello = Some(hello);
                }
            } else if msg_type == 2 && !from_client {
                let Some(hello) = parse_server_hello(body) else { return false };
                let index = self.ensure_row(tracker, flow, client_outbound, ts_ns);
                let row = &mut tracker.rows[index];
                if row.server_hello.is_none() {
                    row.server_hello = Some(hello);
                    row.server_hello_ts_ns = Some(ts_ns);
                }
            }
            start += 4 + length;
        }
        data.drain(..start);
        let side = if from_client { &mut self.from_client } else { &mut self.from_server };
        side.handshake = data;
        true
    }
}
