"""Edge cases of the DNS and HTTP parsers that their shortcuts must keep: text decoded once must keep the byte-level
grammar, and an answer's owner name read without walking its labels must be the name the labels spell.

Expected values are worked out by hand from the RFCs cited in each test, not taken from the parser.
"""

from __future__ import annotations

import struct

from freezeframe.dissect.dns import ResourceRecord
from freezeframe.dissect.dns import parse as parse_dns
from freezeframe.dissect.http import Request, Response
from freezeframe.dissect.http import parse as parse_http

A_CLASS_IN = struct.pack("!HH", 1, 1)  # TYPE A, CLASS IN


def answer_a(owner: bytes, address: bytes) -> bytes:
    """One A record (RFC 1035 4.1.3): NAME, TYPE, CLASS, TTL 60, RDLENGTH 4, RDATA."""
    return owner + A_CLASS_IN + struct.pack("!IH", 60, 4) + address


def test_http_field_values_keep_obs_text() -> None:
    # RFC 9110 5.5: obs-text (0x80-0xFF) is field content; only OWS (SP / HTAB, 5.6.3) around the value goes.
    assert parse_http(b"GET / HTTP/1.1\r\nX-A: \xa0v\x85 \t\r\nX-B:\x1cw") == \
        Request("GET", "/", "HTTP/1.1", {"x-a": "\xa0v\x85", "x-b": "\x1cw"})


def test_http_obs_fold_joins_with_a_space() -> None:
    # RFC 9112 5.2: a line starting with SP or HTAB continues the previous field value.
    assert parse_http(b"HTTP/1.0 200 OK\r\nX: a\r\n \tb") == Response("HTTP/1.0", 200, "OK", {"x": "a b"})


def test_http_refuses_non_ascii_digits_and_letters() -> None:
    # RFC 9112 4: status-code is 3DIGIT, and DIGIT is ASCII (RFC 5234 B.1), so superscript two is not one.
    assert parse_http(b"HTTP/1.1 2\xb20 OK") is None
    # RFC 9110 9.1 and 5.6.2: a method is a token of ASCII characters.
    assert parse_http(b"G\xc9T / HTTP/1.1") is None
    # RFC 9112 5.1: no whitespace between a field name and its colon (vertical tab included).
    assert parse_http(b"GET / HTTP/1.1\r\nHost\x0b: x") is None


def test_dns_answer_owner_written_in_full() -> None:
    # Header: ID 5, QR + RD + RA, QDCOUNT 1, ANCOUNT 2. The first answer repeats QNAME's labels instead of pointing
    # at them; the second names a sibling that shares its first byte with QNAME.
    qname = b"\x03www\x07example\x03com\x00"
    message = (struct.pack("!HHHHHH", 5, 0x8180, 1, 2, 0, 0) + qname + A_CLASS_IN
               + answer_a(qname, b"\x0a\x00\x00\x01") + answer_a(b"\x03wwx\x07example\x03com\x00", b"\x0a\x00\x00\x02"))
    parsed = parse_dns(message)
    assert parsed is not None
    assert parsed.answers == (ResourceRecord("www.example.com", 1, 60, "10.0.0.1"),
                              ResourceRecord("wwx.example.com", 1, 60, "10.0.0.2"))


def test_dns_answer_pointing_at_a_compressed_question() -> None:
    # RFC 1035 4.1.4. The question (offsets 12-19) is QNAME "a" then a pointer to offset 35; the answers start at
    # 20: the first (15 bytes) is owned by the root, the second, at 35, by "example.com" written out, and the third
    # by a pointer to QNAME (0xC00C), which reads "a" and then follows QNAME's own pointer.
    question = b"\x01a\xc0\x23" + A_CLASS_IN
    message = (struct.pack("!HHHHHH", 6, 0x8180, 1, 3, 0, 0) + question
               + answer_a(b"\x00", b"\x0a\x00\x00\x03")
               + answer_a(b"\x07example\x03com\x00", b"\x0a\x00\x00\x04")
               + answer_a(b"\xc0\x0c", b"\x0a\x00\x00\x05"))
    parsed = parse_dns(message)
    assert parsed is not None
    assert parsed.qname == "a.example.com"
    assert [(answer.name, answer.rdata) for answer in parsed.answers] == [
        ("", "10.0.0.3"), ("example.com", "10.0.0.4"), ("a.example.com", "10.0.0.5")]
