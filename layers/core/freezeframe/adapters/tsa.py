"""RFC 3161 time-stamping authority client: one HTTP POST of a TimeStampReq, answered by a TimeStampResp.

The request carries a nonce and asks for the TSA's certificate, so the reply verifies without fetching anything;
the reply is checked here for status, imprint and nonce before it is kept (its signature and certificate chain are
checked against the configured roots by `freezeframe.custody.signatures.verify_timestamp`).
"""

from __future__ import annotations

import urllib.request
from typing import Protocol

from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimeStampRequest,
    TimestampRequestBuilder,
    decode_timestamp_response,
)

from freezeframe.contracts.errors import CustodyError

REQUEST_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
MAX_REPLY_BYTES = 1 << 20


class TimeStamper(Protocol):
    def stamp(self, message: bytes) -> bytes:
        """The DER TimeStampResp over sha256(message)."""
        ...


def timestamp_request(message: bytes) -> TimeStampRequest:
    """A TimeStampReq over sha256(message) with a nonce, asking for the TSA's certificate."""
    return (TimestampRequestBuilder().data(message).hash_algorithm(HashAlgorithm.SHA256)
            .nonce(nonce=True).cert_request(cert_request=True).build())


def check_reply(source: str, request: TimeStampRequest, body: bytes) -> bytes:
    """The reply, once it is a granted TimeStampResp for this request's imprint and nonce."""
    if len(body) > MAX_REPLY_BYTES:
        raise CustodyError(f"time-stamping authority {source} answered more than {MAX_REPLY_BYTES} bytes")
    try:
        response = decode_timestamp_response(body)
    except ValueError as exc:
        raise CustodyError(f"time-stamping authority {source} answered no TimeStampResp: {exc}") from exc
    if PKIStatus(response.status) not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise CustodyError(f"time-stamping authority {source} refused: status {response.status} "
                           f"{response.status_string}")
    if response.tst_info.message_imprint.message != request.message_imprint.message:
        raise CustodyError(f"time-stamping authority {source} stamped another digest")
    if response.tst_info.nonce != request.nonce:
        raise CustodyError(f"time-stamping authority {source} answered with another nonce")
    return body


class HttpTimeStamper:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise CustodyError(f"time-stamping authority URL must be http(s), got {url!r}")
        self.url = url
        self.timeout_s = timeout_s

    def stamp(self, message: bytes) -> bytes:
        request = timestamp_request(message)
        http = urllib.request.Request(self.url, data=request.as_bytes(), method="POST",  # noqa: S310 - http(s) only
                                      headers={"Content-Type": REQUEST_TYPE, "Accept": REPLY_TYPE})
        try:
            with urllib.request.urlopen(http, timeout=self.timeout_s) as reply:  # noqa: S310
                body = reply.read(MAX_REPLY_BYTES + 1)
        except OSError as exc:
            raise CustodyError(f"time-stamping authority {self.url} unreachable: {exc}") from exc
        return check_reply(self.url, request, body)
