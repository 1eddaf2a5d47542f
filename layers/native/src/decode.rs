//! Link layer -> IP -> TCP/UDP header decoding (a port of freezeframe.dissect.decode, same Skip reasons).

pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    NonIp = 0,
    Malformed = 1,
    Truncated = 2,
    Fragment = 3,
    OtherTransport = 4,
    UnsupportedLink = 5,
}

/// Addresses of one packet: 4 or 16 bytes used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Key {
    pub v6: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// Hashed as whole words (two or five), not byte by byte as the derived hash of the address arrays is: every packet
/// looks its flow up. Equal keys hash equally: every word is taken from the fields that equality compares.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let word = |bytes: &[u8; 16], at: usize| {
            u64::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5],
                                bytes[at + 6], bytes[at + 7]])
        };
        if self.v6 {
            state.write_u64(word(&self.src, 0));
            state.write_u64(word(&self.src, 8));
            state.write_u64(word(&self.dst, 0));
            state.write_u64(word(&self.dst, 8));
        } else {
            state.write_u64((word(&self.src, 0) << 32) | (word(&self.dst, 0) & 0xFFFF_FFFF));
        }
        state.write_u64(((self.sport as u64) << 32) | ((self.dport as u64) << 8) | self.v6 as u64);
    }
}

impl Key {
    pub fn reversed(&self) -> Key {
        Key { v6: self.v6, src: self.dst, dst: self.src, sport: self.dport, dport: self.sport }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    pub proto: u8,
    pub key: Key,
    pub flags: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub payload_len: i64,
    pub payload_offset: usize,
    pub header_offset: usize,
}

#[inline]
fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

#[inline]
fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

pub fn decode(link_type: u32, data: &[u8]) -> Result<Decoded, Skip> {
    let size = data.len();
    let (mut ethertype, mut offset) = match link_type {
        LINKTYPE_ETHERNET => {
            if size < 14 {
                return Err(Skip::Truncated);
            }
            (be16(data, 12), 14)
        }
        LINKTYPE_LINUX_SLL2 => {
            if size < 20 {
                return Err(Skip::Truncated);
            }
            (be16(data, 0), 20)
        }
        LINKTYPE_LINUX_SLL => {
            if size < 16 {
                return Err(Skip::Truncated);
            }
            (be16(data, 14), 16)
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            if size == 0 {
                return Err(Skip::Truncated);
            }
            return match data[0] >> 4 {
                4 => decode_ipv4(data, 0),
                6 => decode_ipv6(data, 0),
                _ => Err(Skip::Malformed),
            };
        }
        _ => return Err(Skip::UnsupportedLink),
    };
    while ethertype == 0x8100 || ethertype == 0x88A8 || ethertype == 0x9100 {
        if size < offset + 4 {
            return Err(Skip::Truncated);
        }
        ethertype = be16(data, offset + 2);
        offset += 4;
    }
    match ethertype {
        0x0800 => decode_ipv4(data, offset),
        0x86DD => decode_ipv6(data, offset),
        _ => Err(Skip::NonIp),
    }
}

/// The `N` bytes at `offset` as an array (its fields then read without a bounds check each), or None when fewer.
#[inline]
fn header<const N: usize>(data: &[u8], offset: usize) -> Option<&[u8; N]> {
    data.get(offset..).and_then(|rest| rest.first_chunk::<N>())
}

fn decode_ipv4(data: &[u8], offset: usize) -> Result<Decoded, Skip> {
    let size = data.len();
    let Some(h) = header::<20>(data, offset) else {
        return Err(Skip::Truncated);
    };
    let version_ihl = h[0];
    let mut total_length = be16(h, 2) as i64;
    let flags_offset = be16(h, 6);
    let protocol = h[9];
    if version_ihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = ((version_ihl & 0x0F) as i64) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    if total_length == 0 {
        total_length = (size - offset) as i64;
    }
    if total_length < ihl {
        return Err(Skip::Malformed);
    }
    if flags_offset & 0x1FFF != 0 {
        return Err(Skip::Fragment);
    }
    let mut key = Key { v6: false, src: [0; 16], dst: [0; 16], sport: 0, dport: 0 };
    key.src[..4].copy_from_slice(&h[12..16]);
    key.dst[..4].copy_from_slice(&h[16..20]);
    decode_transport(data, offset + ihl as usize, total_length - ihl, protocol, key)
}

fn decode_ipv6(data: &[u8], offset: usize) -> Result<Decoded, Skip> {
    let size = data.len();
    if size < offset + 40 {
        return Err(Skip::Truncated);
    }
    if data[offset] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let mut payload_length = be16(data, offset + 4) as usize;
    let mut next_header = data[offset + 6];
    let mut key = Key { v6: true, src: [0; 16], dst: [0; 16], sport: 0, dport: 0 };
    key.src.copy_from_slice(&data[offset + 8..offset + 24]);
    key.dst.copy_from_slice(&data[offset + 24..offset + 40]);
    let mut position = offset + 40;
    if payload_length == 0 {
        payload_length = size - position;
    }
    let end = position + payload_length;
    while matches!(next_header, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254) {
        if size < position + 8 {
            return Err(Skip::Truncated);
        }
        let length = if next_header == 44 {
            if be16(data, position + 2) & 0xFFF8 != 0 {
                return Err(Skip::Fragment);
            }
            8
        } else if next_header == 51 {
            (data[position + 1] as usize + 2) * 4
        } else {
            (data[position + 1] as usize + 1) * 8
        };
        next_header = data[position];
        position += length;
        if position > end {
            return Err(Skip::Malformed);
        }
    }
    decode_transport(data, position, (end - position) as i64, next_header, key)
}

fn decode_transport(data: &[u8], offset: usize, length: i64, protocol: u8, mut key: Key) -> Result<Decoded, Skip> {
    if protocol == IPPROTO_TCP {
        let Some(h) = header::<20>(data, offset) else {
            return Err(Skip::Truncated);
        };
        key.sport = be16(h, 0);
        key.dport = be16(h, 2);
        let seq = be32(h, 4);
        let ack = be32(h, 8);
        let data_offset = h[12];
        let flags = h[13];
        let window = be16(h, 14);
        let header_length = ((data_offset >> 4) as i64) * 4;
        if header_length < 20 || header_length > length {
            return Err(Skip::Malformed);
        }
        return Ok(Decoded { proto: IPPROTO_TCP, key, flags: flags as u16 | (((data_offset & 1) as u16) << 8), seq, ack,
                            window, payload_len: length - header_length,
                            payload_offset: offset + header_length as usize, header_offset: offset });
    }
    if protocol == IPPROTO_UDP {
        if data.len() < offset + 8 {
            return Err(Skip::Truncated);
        }
        if length < 8 {
            return Err(Skip::Malformed);
        }
        key.sport = be16(data, offset);
        key.dport = be16(data, offset + 2);
        return Ok(Decoded { proto: IPPROTO_UDP, key, flags: 0, seq: 0, ack: 0, window: 0, payload_len: length - 8,
                            payload_offset: offset + 8, header_offset: offset });
    }
    Err(Skip::OtherTransport)
}

/// Text of a packed address exactly as glibc's inet_ntop writes it (IPv4-compatible and -mapped forms included).
pub fn ip_text(v6: bool, addr: &[u8; 16]) -> String {
    if !v6 {
        return ipv4_text([addr[0], addr[1], addr[2], addr[3]]);
    }
    let mut words = [0u16; 8];
    for (i, word) in words.iter_mut().enumerate() {
        *word = u16::from_be_bytes([addr[2 * i], addr[2 * i + 1]]);
    }
    // The longest run of zero words (first one wins), if at least 2 long.
    let (mut best_base, mut best_len) = (-1i32, 0i32);
    let (mut cur_base, mut cur_len) = (-1i32, 0i32);
    for (i, word) in words.iter().enumerate() {
        if *word == 0 {
            if cur_base < 0 {
                cur_base = i as i32;
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base >= 0 {
            if best_base < 0 || cur_len > best_len {
                best_base = cur_base;
                best_len = cur_len;
            }
            cur_base = -1;
        }
    }
    if cur_base >= 0 && (best_base < 0 || cur_len > best_len) {
        best_base = cur_base;
        best_len = cur_len;
    }
    if best_base >= 0 && best_len < 2 {
        best_base = -1;
    }
    let mut out = String::with_capacity(40);
    let mut i = 0i32;
    while i < 8 {
        if best_base >= 0 && i >= best_base && i < best_base + best_len {
            if i == best_base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)) {
            out.push_str(&format!("{}.{}.{}.{}", addr[12], addr[13], addr[14], addr[15]));
            break;
        }
        out.push_str(&format!("{:x}", words[i as usize]));
        i += 1;
    }
    if best_base >= 0 && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

/// Dotted-quad text of an IPv4 address (what `format!("{}.{}.{}.{}")` writes, without the formatting machinery).
pub fn ipv4_text(addr: [u8; 4]) -> String {
    let mut out = Vec::with_capacity(15);
    for (i, octet) in addr.into_iter().enumerate() {
        if i != 0 {
            out.push(b'.');
        }
        push_decimal(&mut out, octet as u64);
    }
    String::from_utf8(out).unwrap_or_default() // digits and dots: always UTF-8
}

/// Appends the decimal digits of `value`, two at a time.
pub fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849\
                               5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + value as u8;
    }
    out.extend_from_slice(&digits[at..]);
}
