"""A local RFC 3161 time-stamping authority for the local stack and the tests, built with openssl.

`ensure_authority` makes a test CA and a TSA certificate (extendedKeyUsage critical,timeStamping) with
`openssl req`/`openssl x509`; `serve` answers `application/timestamp-query` POSTs on loopback with
`openssl ts -reply`. The replies are ordinary RFC 3161 responses: `openssl ts -verify -CAfile ca.pem` checks them.

    python -m freezeframe_local.tsa --dir DIR --port PORT
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from freezeframe.adapters.tsa import check_reply, timestamp_request
from freezeframe.contracts.errors import StackError

logger = logging.getLogger(__name__)
MAX_QUERY_BYTES = 16 * 1024
READ_TIMEOUT_S = 5.0
POLICY_OID = "1.3.6.1.4.1.57264.2.1"  # a private test policy: stamped into every token

_TSA_CONFIG = """\
[ tsa ]
default_tsa = local_tsa

[ local_tsa ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = {policy}
other_policies = {policy}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
_TSA_EXTENSIONS = """\
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True, slots=True)
class Authority:
    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def tsa_pem(self) -> Path:
        return self.directory / "tsa.pem"

    @property
    def config(self) -> Path:
        return self.directory / "tsa.cnf"


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {result.stderr.decode(errors='replace')[-600:]}")
    return result.stdout


def ensure_authority(directory: Path, days: int = 3650) -> Authority:
    """The CA and TSA certificate in `directory`, made once (P-256 keys, private keys readable by the owner)."""
    authority = Authority(directory.resolve())
    if authority.ca_pem.exists() and authority.tsa_pem.exists() and authority.config.exists():
        return authority
    d = authority.directory
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", str(days),
             "-subj", "/O=freezeframe local/CN=freezeframe local time-stamping root",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(d / "tsa.key"), "-out", str(d / "tsa.csr"),
             "-subj", "/O=freezeframe local/CN=freezeframe local time-stamping authority")
    (d / "tsa.ext").write_text(_TSA_EXTENSIONS, encoding="utf-8")
    _openssl("x509", "-req", "-in", str(d / "tsa.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", str(days), "-sha256", "-extfile", str(d / "tsa.ext"),
             "-out", str(d / "tsa.pem"))
    (d / "serial").write_text("01\n", encoding="utf-8")
    authority.config.write_text(_TSA_CONFIG.format(dir=d, policy=POLICY_OID), encoding="utf-8")
    return authority


class Responder:
    """openssl ts -reply, one at a time (it increments the serial file)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.lock = threading.Lock()

    def __call__(self, query: bytes) -> bytes:
        with self.lock, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "query.tsq"
            path.write_bytes(query)
            return _openssl("ts", "-reply", "-config", str(self.authority.config), "-queryfile", str(path))


class LocalTimeStamper:
    """A TimeStamper answered by this authority in-process (no HTTP): for the unit tier."""

    def __init__(self, authority: Authority) -> None:
        self.responder = Responder(authority)

    def stamp(self, message: bytes) -> bytes:
        request = timestamp_request(message)
        return check_reply(str(self.responder.authority.directory), request, self.responder(request.as_bytes()))


def make_server(authority: Authority, port: int) -> ThreadingHTTPServer:
    reply = Responder(authority)

    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S  # a slow client cannot hold a thread forever

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/health":
                self._answer(200, b"ok", "text/plain")
            else:
                self._answer(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/timestamp-query":
                self._answer(415, b"expected application/timestamp-query", "text/plain")
                return
            length = self.headers.get("Content-Length", "")
            if not length.isdigit() or not 0 < int(length) <= MAX_QUERY_BYTES:
                self._answer(400, b"bad Content-Length", "text/plain")
                return
            query = self.rfile.read(int(length))
            if len(query) != int(length):
                self._answer(400, b"short body", "text/plain")
                return
            try:
                body = reply(query)
            except StackError as exc:
                logger.warning("time-stamp request refused: %s", exc)
                self._answer(400, b"not a time-stamp query", "text/plain")
                return
            self._answer(200, body, "application/timestamp-reply")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            logger.debug(format, *args)

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def start_tsa(directory: Path, port: int, timeout_s: float = 20.0) -> tuple[str, int]:
    """A detached TSA process on 127.0.0.1:port; returns (url, pid) once it answers."""
    ensure_authority(directory)
    log = open(directory / "tsa.log", "ab")  # noqa: SIM115 - handed to the detached child
    proc = subprocess.Popen([sys.executable, "-m", "freezeframe_local.tsa", "--dir", str(directory),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"time-stamping authority exited with {proc.returncode}; see {directory / 'tsa.log'}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return f"{url}/tsr", proc.pid
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise StackError(f"time-stamping authority did not answer on {url} within {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freezeframe_local.tsa", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    server = make_server(ensure_authority(args.dir), args.port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
