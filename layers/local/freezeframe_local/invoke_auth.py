"""Credentials for the local gateway's Lambda Invoke API: a per-stack key pair and a real SigV4 check.

An unauthenticated Invoke API on the local gateway would let anything that reaches it run the freeze function, which
writes holds and manifests. So the gateway does what Lambda does: it refuses any invocation that is not signed with
AWS Signature Version 4 by the stack's own credentials. The secret is made once per state directory (random, in a
0600 file beside the stack's state) and read by every client of that stack, so the real handlers' boto3 Lambda
client (freezeframe.adapters.invoke) signs its invocations with it and keeps working unchanged. The secret never
travels: SigV4 sends only an HMAC of the request under a key derived from it.

The check recomputes the signature with botocore's own SigV4 signer over the request as received (method, raw
path, query, the headers the client says it signed, the SHA-256 of the body actually received) and compares in
constant time; it also refuses a date more than MAX_SKEW away and a body that does not match a signed
`x-amz-content-sha256`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from freezeframe.adapters.invoke_key import ACCESS_KEY_ID, KEY_FILE_NAME, credentials, key_file  # noqa: F401 - the gateway and its tests use them from here
from freezeframe.contracts.errors import SignatureError

MAX_SKEW = timedelta(minutes=5)  # Lambda's own tolerance for X-Amz-Date
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<signed>[a-z0-9;._-]+),\s*Signature=(?P<signature>[0-9a-f]{64})")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")


def verify(method: str, target: str, headers: Mapping[str, str], body: bytes, access_key: str, secret_key: str,
           now: datetime | None = None) -> None:
    """SignatureError unless the request (`target` is the raw request target: path and query as sent) carries a
    valid SigV4 signature by `access_key`. The reason names what was wrong, never the expected value."""
    lowered = {name.lower(): value for name, value in headers.items()}
    match = _AUTHORIZATION.fullmatch(lowered.get("authorization", "").strip())
    if match is None:
        raise SignatureError("missing or malformed AWS Signature Version 4 Authorization header")
    amz_date = lowered.get("x-amz-date", "")
    if not _AMZ_DATE.fullmatch(amz_date) or amz_date[:8] != match["date"]:
        raise SignatureError("X-Amz-Date is missing or does not match the credential scope")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SignatureError("X-Amz-Date is not a valid time") from exc
    if abs((now or datetime.now(UTC)) - signed_at) > MAX_SKEW:
        raise SignatureError(f"the signature's time is more than {MAX_SKEW} away from the server's")
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in lowered for name in signed):
        raise SignatureError("the signed headers must include host and be present in the request")
    declared = lowered.get("x-amz-content-sha256")
    if declared is not None and not hmac.compare_digest(declared.encode(), hashlib.sha256(body).hexdigest().encode()):
        raise SignatureError("the body does not match its signed x-amz-content-sha256")
    request = AWSRequest(method=method.upper(), url=f"http://{lowered['host']}{target}", data=body,
                         headers={name: lowered[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret_key), match["service"], match["region"])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    # Both comparisons always run, so the time taken does not tell which one failed.
    key_ok = hmac.compare_digest(match["key"].encode(), access_key.encode())
    signature_ok = hmac.compare_digest(match["signature"].encode(), expected.encode())
    headers_ok = signer.signed_headers(signer.headers_to_sign(request)) == match["signed"]
    if not (key_ok and signature_ok and headers_ok):
        raise SignatureError("the request signature does not verify for this stack's credentials")
