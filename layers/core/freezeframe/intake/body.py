"""Parsing an untrusted webhook body as JSON, within bounds, so that any body is either a document or a PayloadError.

Python's `json` alone is not enough for bodies an attacker writes:
- nesting: 100,000 brackets make the decoder raise RecursionError (and a document a few hundred deep would still
  recurse through every later walk of it); bodies are refused past MAX_DEPTH before the decoder runs;
- numbers: a 5,000-digit integer makes `int()` raise ValueError (CPython's 4,300-digit conversion limit), and
  NaN/Infinity are not JSON at all; numbers longer than MAX_NUMBER_CHARS, floats beyond the double range (1e999)
  and the non-JSON constants are refused;
- text: the body must be UTF-8 (RFC 8259 section 8.1), and a `\\ud800` escape decodes to a lone surrogate that no
  later `.encode()` (a hash, a key, a log line) accepts; such strings are refused.
Every refusal is a PayloadError naming the problem, so it becomes a 400 and nothing is written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from freezeframe.contracts.errors import PayloadError

# Alertmanager, PagerDuty and the manual freeze nest at most 4 levels (PagerDuty: event.data.priority.summary).
MAX_DEPTH = 32
# Longer than any integer or float a webhook carries (an epoch in nanoseconds has 19 digits).
MAX_NUMBER_CHARS = 64
# Strings (skipped whole, escapes included; an unterminated one runs to the end) and the brackets that open or close
# a level. The possessive loop never backtracks, so the scan is linear even on a megabyte of escapes.
_DEPTH_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*+"?|[\[\]{}]', re.DOTALL)


def parse_object(body: bytes) -> Mapping[str, Any]:
    """The body as a JSON object, or PayloadError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (invalid byte at offset {exc.start})") from exc
    check_depth(body)
    try:
        payload = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, Mapping):
        raise PayloadError("body must be a JSON object")
    _check_strings(payload)
    return payload


def check_depth(body: bytes, limit: int = MAX_DEPTH) -> None:
    """PayloadError when brackets outside strings nest deeper than `limit` (checked on the raw bytes, so the decoder
    never recurses that deep)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return  # cannot nest deeper than the number of opening brackets
    depth = 0
    for match in _DEPTH_TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise PayloadError(f"body nests deeper than {limit} levels")
        elif token in (b"]", b"}"):
            depth -= 1


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise PayloadError(f"body holds a number of {len(text)} characters; the limit is {MAX_NUMBER_CHARS}")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise PayloadError(f"body holds a number of {len(text)} characters; the limit is {MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses to inf, which no field means and json.dumps cannot write back
        raise PayloadError(f"body holds a number out of range: {text[:32]}")
    return value


def _constant(name: str) -> Any:
    raise PayloadError(f"body is not valid JSON: {name} is not a JSON value")


def _check_strings(document: Any) -> None:
    """PayloadError for a key or string value that is not valid Unicode text (a lone surrogate from an escape)."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                _check_text(key)
                pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"body holds a string that is not valid Unicode (a lone surrogate at {exc.start})") from exc
