"""Local S3 endpoints: LocalStack (enforces Object Lock) and in-process moto (demo default only).

LocalStack needs Python 3.13 and pins that clash with the project's own dependencies, so it lives in
its own venv under the user cache (never in the repo). moto accepts shortening COMPLIANCE retention,
so it cannot prove the WORM guarantees; `check_object_lock_enforcement` tells the two apart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from freezeframe.contracts.config import cache_dir as config_cache_dir
from freezeframe.contracts.config import child_env, pyenv_root_override
from freezeframe.contracts.errors import StackError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

LOCALSTACK_PINS = (
    "localstack-core[runtime]==2026.3.0",
    "cbor2<6",
    "pyopenssl==24.3.0",
    "cryptography==44.0.3",
    "service_identity<25",
)
LOCAL_ACCESS_KEY = "test"
LOCAL_SECRET_KEY = "test"  # noqa: S105 - the fixed dummy key every local S3 endpoint accepts
LOCAL_REGION = "us-east-1"
LOCK_PROBE_PREFIX = "freezeframe-lockprobe-"

_VENV_NAME = "localstack-venv"
_MARKER_NAME = ".freezeframe-installed.json"
_LOG_NAME = "localstack.log"
_LOG_TAIL_BYTES = 4000
_READY_MARKER = "Ready."  # localstack.constants.READY_MARKER_OUTPUT, printed on a line of its own
_LISTEN_ERROR_MARKERS = ("CannotListenError", "Address already in use")
_ABORT_GRACE_SECONDS = 5.0
_S3_STORAGE_ENV = "FREEZEFRAME_LOCALSTACK_S3_STORAGE"
# LocalStack's S3 provider keeps object files under a hard-coded /tmp/localstack-s3-storage/<bucket>, shared by
# every instance on the machine (one instance deleting bucket X removes the directory another's bucket X
# writes into), and honours no setting for it. This launcher points it into the workdir before LocalStack starts.
_LOCALSTACK_LAUNCHER = f"""
import os, sys
from localstack.services.s3 import provider
if not hasattr(provider, "DEFAULT_S3_TMP_DIR"):
    sys.exit("freezeframe: this LocalStack has no provider.DEFAULT_S3_TMP_DIR; update freezeframe_local.s3")
provider.DEFAULT_S3_TMP_DIR = os.environ[{_S3_STORAGE_ENV!r}]
# LocalStack's twisted server ignores the host of an IPv4 GATEWAY_LISTEN address ("TODO: interface = host?") and
# listens on every interface. Loopback only: every IPv4 endpoint it makes gets the interface GATEWAY_LISTEN names.
from twisted.internet import endpoints
_TCP4 = endpoints.TCP4ServerEndpoint
_HOST = os.environ["GATEWAY_LISTEN"].split(",")[0].rsplit(":", 1)[0]
def _loopback_endpoint(reactor, port, backlog=50, interface=""):
    return _TCP4(reactor, port, backlog, interface or _HOST)
endpoints.TCP4ServerEndpoint = _loopback_endpoint
from localstack.runtime.main import main
main()
"""


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """A running local S3 endpoint."""

    url: str  # "http://127.0.0.1:<port>"
    kind: str  # "localstack" | "moto"
    pid: int | None  # None for in-process moto
    workdir: Path | None
    log_path: Path | None


def default_cache_dir() -> Path:
    """Where freezeframe keeps tools it builds outside the repo (~/.cache/freezeframe)."""
    return config_cache_dir()


def _is_python313(candidate: Path) -> bool:
    # A pyenv shim is on PATH even when 3.13 is not the active version; it then exits 127, so run it.
    try:
        result = subprocess.run(
            [str(candidate), "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.debug("python candidate %s unusable: %s", candidate, exc)
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def _pyenv_root() -> Path:
    override = pyenv_root_override()
    if override:
        return override
    try:
        result = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return Path.home() / ".pyenv"
    if result.returncode == 0 and result.stdout.strip():
        return Path(result.stdout.strip())
    return Path.home() / ".pyenv"


def find_python313() -> Path:
    """A working python3.13: on PATH first, else the newest pyenv 3.13.x build."""
    candidates: list[Path] = []
    on_path = shutil.which("python3.13")
    if on_path:
        candidates.append(Path(on_path))
    versions = _pyenv_root() / "versions"
    if versions.is_dir():
        builds = sorted(versions.glob("3.13*/bin/python3.13"), key=lambda p: p.parent.parent.name, reverse=True)
        candidates.extend(builds)
    for candidate in candidates:
        if _is_python313(candidate):
            return candidate
    tried = ", ".join(str(c) for c in candidates) or "none"
    raise StackError(
        "LocalStack needs Python 3.13, and no working python3.13 was found "
        f"(on PATH or under {versions}/3.13*; tried: {tried}). Install one, e.g. `pyenv install 3.13`."
    )


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _read_marker(venv: Path) -> dict[str, Any] | None:
    marker = venv / _MARKER_NAME
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("unreadable venv marker %s: %s", marker, exc)
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two CLIs (or a CLI and a test) may build the venv at once; the second waits and then reuses it.
    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _repoint_venv(built: Path, final: Path) -> None:
    """Replace the tmp build path by the final one in scripts, activate files and pyvenv.cfg before the rename."""
    old = str(built).encode()
    new = str(final).encode()
    for path in [built / "pyvenv.cfg", *(built / "bin").iterdir()]:
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if old in content and b"\0" not in content:  # text only: never patch a binary executable
            path.write_bytes(content.replace(old, new))


def _remove_leftovers(cache: Path) -> None:
    # Build dirs of a process that was killed mid-build; safe to delete while we hold the build lock.
    for leftover in [*cache.glob(f"{_VENV_NAME}.tmp-*"), *cache.glob(f"{_VENV_NAME}.stale-*")]:
        logger.info("removing leftover %s", leftover)
        shutil.rmtree(leftover)


def ensure_localstack(cache_dir: Path | None = None) -> Path:
    """Return the python of a LocalStack venv, building it (one pip install of the pins) if needed."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / _VENV_NAME
    wanted = {"pins": list(LOCALSTACK_PINS)}
    with _file_lock(cache / f"{_VENV_NAME}.lock"):
        marker = _read_marker(venv)
        if marker is not None and marker.get("pins") == wanted["pins"] and _venv_python(venv).exists():
            return _venv_python(venv)
        python313 = find_python313()
        _remove_leftovers(cache)
        tmp = cache / f"{_VENV_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        logger.info("building LocalStack venv in %s with %s", tmp, python313)
        started = time.monotonic()
        try:
            _run_checked([str(python313), "-m", "venv", "--prompt", _VENV_NAME, str(tmp)], "create the LocalStack venv")
            _run_checked(
                [
                    str(_venv_python(tmp)),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-input",
                    *LOCALSTACK_PINS,
                ],
                "install LocalStack",
            )
            _repoint_venv(tmp, venv)
            marker_data = {**wanted, "python": str(python313), "built_at": dt.datetime.now(dt.UTC).isoformat()}
            (tmp / _MARKER_NAME).write_text(json.dumps(marker_data, indent=2), encoding="utf-8")
            if venv.exists():
                # A venv without a matching marker is stale (other pins); move it aside before swapping in.
                stale = cache / f"{_VENV_NAME}.stale-{secrets.token_hex(4)}"
                venv.rename(stale)
                shutil.rmtree(stale)
            tmp.rename(venv)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        logger.info("LocalStack venv ready in %.1f s", time.monotonic() - started)
    return _venv_python(venv)


def _run_checked(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-_LOG_TAIL_BYTES:]
        raise StackError(f"could not {what} (exit {result.returncode}): {' '.join(argv)}\n{tail}")


def s3_client(url: str, max_attempts: int | None = None) -> S3Client:
    """A boto3 S3 client for a local endpoint: static test credentials, path-style addressing.

    max_attempts=1 turns off botocore's retries, e.g. to see a BadDigest at once (botocore retries it).
    """
    config = Config(s3={"addressing_style": "path"})
    if max_attempts is not None:
        config = config.merge(Config(retries={"total_max_attempts": max_attempts}))
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        region_name=LOCAL_REGION,
        config=config,
    )


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _log_tail(log_path: Path) -> str:
    try:
        with log_path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log {log_path} unreadable: {exc})"


def _localstack_env(workdir: Path, port: int) -> dict[str, str]:
    # The parent may run inside the project's 3.11 venv; its paths must not leak into the 3.13 venv.
    env = child_env(drop=("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"))
    env.update(
        {
            "SERVICES": "s3,kms",  # kms: the asymmetric key that signs evidence
            "DISABLE_EVENTS": "1",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DNS_ADDRESS": "0",
            "GATEWAY_LISTEN": f"127.0.0.1:{port}",
            # URLs LocalStack returns (e.g. multipart Location) must name the port it listens on.
            "LOCALSTACK_HOST": f"127.0.0.1:{port}",
            "PERSISTENCE": "0",
            # Host mode puts its filesystem root in the venv's site-packages unless told otherwise.
            "FILESYSTEM_ROOT": str(workdir / "filesystem"),
            "LOCALSTACK_VOLUME_DIR": str(workdir / "volume"),
            # Config profiles in ~/.localstack would otherwise be loaded into this instance.
            "CONFIG_DIR": str(workdir / "config"),
            # S3 object bodies go to mkdtemp(); LocalStack logs a harmless deprecation warning for TMPDIR.
            "TMPDIR": str(workdir / "tmp"),
            _S3_STORAGE_ENV: str(workdir / "s3-storage"),
        }
    )
    return env


def _health_s3_ready(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/_localstack/health")
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return False  # not up yet, or something that is not LocalStack holds the port
    finally:
        connection.close()
    if response.status != 200:
        return False
    try:
        health = json.loads(body)
    except ValueError:
        return False
    return isinstance(health, dict) and health.get("services", {}).get("s3") in ("available", "running")


def _s3_answers(url: str) -> bool:
    client = s3_client(url, max_attempts=1)
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError) as exc:
        logger.debug("S3 at %s not ready yet: %s", url, exc)
        return False
    return True


# Popen objects of the LocalStack processes this interpreter started, kept so they are reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _log_since(log_path: Path, offset: int) -> str:
    with log_path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode("utf-8", errors="replace")


def start_localstack(workdir: Path, port: int | None = None, timeout: float = 90.0) -> S3Endpoint:
    """Start LocalStack (S3 only) detached from this process, keeping its state in workdir; wait until healthy."""
    python = ensure_localstack()
    workdir = workdir.resolve()
    for sub in ("filesystem", "volume", "config", "tmp", "s3-storage"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    port = port if port is not None else _free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / _LOG_NAME
    started = time.monotonic()
    with log_path.open("ab") as log:
        log_offset = log.tell()  # a reused workdir appends; only this run's lines count
        # start_new_session: its own process group, so it outlives a CLI that exits and stops as one group.
        process = subprocess.Popen(
            [str(python), "-c", _LOCALSTACK_LAUNCHER],
            cwd=workdir,
            env=_localstack_env(workdir, port),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[process.pid] = process
    logger.info("started LocalStack pid %d on %s (log %s)", process.pid, url, log_path)
    try:
        _wait_until_ready(process, port, log_path, log_offset, started, timeout)
    except BaseException:
        # Also on Ctrl-C: never leave a half-started LocalStack behind. It can sit on SIGTERM while booting.
        stop_process(process.pid, timeout=_ABORT_GRACE_SECONDS)
        raise
    logger.info("LocalStack healthy on %s after %.2f s", url, time.monotonic() - started)
    return S3Endpoint(url=url, kind="localstack", pid=process.pid, workdir=workdir, log_path=log_path)


def _wait_until_ready(
    process: subprocess.Popen[bytes], port: int, log_path: Path, log_offset: int, started: float, timeout: float
) -> None:
    url = f"http://127.0.0.1:{port}"
    deadline = started + timeout
    while True:
        exit_code = process.poll()
        if exit_code is not None:
            _children.pop(process.pid, None)
            raise StackError(
                f"LocalStack exited with code {exit_code} before it was ready on {url}; log {log_path}:\n"
                f"{_log_tail(log_path)}"
            )
        output = _log_since(log_path, log_offset)
        # When the port is taken LocalStack logs the error, prints "Ready." anyway and keeps running; whatever
        # holds the port (maybe another LocalStack) would then answer the health check in its place.
        if any(marker in output for marker in _LISTEN_ERROR_MARKERS):
            raise StackError(f"LocalStack could not listen on 127.0.0.1:{port}; log {log_path}:\n{_log_tail(log_path)}")
        if _READY_MARKER in output.splitlines() and _health_s3_ready(port) and _s3_answers(url):
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"LocalStack did not become healthy on {url} within {timeout:g} s; log {log_path}:\n"
                f"{_log_tail(log_path)}"
            )
        time.sleep(0.1)


def _reap(pid: int) -> bool:
    """Collect pid if it is our exited child; True when it has been collected."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        _children.pop(pid, None)
        return True
    try:
        reaped_pid, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # not our child: init reaps it
    return reaped_pid == pid


def _alive(pid: int, pgid: int | None) -> bool:
    if _reap(pid) and pgid is None:
        return False
    try:
        if pgid is not None:
            os.killpg(pgid, 0)
        else:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, pgid: int | None, signum: signal.Signals) -> None:
    try:
        if pgid is not None:
            os.killpg(pgid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return


def _wait_gone(pid: int, pgid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid, pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM pid's process group (or pid alone if it leads none), SIGKILL after timeout; silent if gone."""
    if pid <= 0:
        # kill(0) and kill(-1) would signal our own group or every process we may signal.
        raise ValueError(f"not a process id: {pid}")
    try:
        pgid: int | None = os.getpgid(pid)
    except ProcessLookupError:
        _reap(pid)
        return
    # Only signal a whole group that pid leads; never our own group.
    if pgid != pid or pgid == os.getpgrp():
        pgid = None
    try:
        _signal(pid, pgid, signal.SIGTERM)
    except PermissionError as exc:
        raise StackError(f"not allowed to stop process {pid}: {exc}") from exc
    if _wait_gone(pid, pgid, timeout):
        logger.info("process %d stopped", pid)
        return
    logger.warning("process %d ignored SIGTERM for %.0f s, sending SIGKILL", pid, timeout)
    _signal(pid, pgid, signal.SIGKILL)
    if not _wait_gone(pid, pgid, 10.0):
        raise StackError(f"process {pid} survived SIGKILL")


def start_moto() -> tuple[Any, S3Endpoint]:
    """Start an in-process moto server on a free loopback port (demo default: it does NOT enforce WORM fully)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise StackError("moto is not installed; install the `local` extra: pip install 'freezeframe[local]'") from exc
    # werkzeug logs every request at INFO to its own stderr handler unless the application configured it.
    werkzeug_logger = logging.getLogger("werkzeug")
    if werkzeug_logger.level == logging.NOTSET:
        werkzeug_logger.setLevel(logging.WARNING)
    # Port 0 lets the kernel choose, with no window in which another process can take the port.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    url = f"http://127.0.0.1:{port}"
    logger.info("started in-process moto S3 on %s", url)
    return server, S3Endpoint(url=url, kind="moto", pid=None, workdir=None, log_path=None)


def _error_status(exc: ClientError) -> int:
    status: int = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return status


def _refused(attempt: Callable[[], object], what: str) -> bool:
    """True when the endpoint answered the attempt with a 4xx error (a refusal, not a crash)."""
    try:
        attempt()
    except ClientError as exc:
        status = _error_status(exc)
        logger.info("lock probe %s: refused with %s (HTTP %d)", what, exc.response.get("Error", {}).get("Code"), status)
        return 400 <= status < 500
    logger.info("lock probe %s: accepted", what)
    return False


def _lock_is_intact(client: S3Client, bucket: str, key: str, version_id: str, retain_until: dt.datetime) -> bool:
    # head_object, not get_object_retention: moto answers the latter with HTTP 500.
    try:
        head = client.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    except ClientError as exc:
        logger.info("lock probe: version %s of %s is gone or unreadable (HTTP %d)", version_id, key, _error_status(exc))
        return False
    until = head.get("ObjectLockRetainUntilDate")
    return head.get("ObjectLockMode") == "COMPLIANCE" and until is not None and until >= retain_until


def check_object_lock_enforcement(url: str) -> dict[str, bool]:
    """Prove (or disprove) that the endpoint at url enforces COMPLIANCE retention like AWS S3.

    Each attempt runs against its own freshly locked version, so one accepted attempt cannot mask the
    next. An attempt counts as refused only when the endpoint answered 4xx AND the lock is unchanged
    afterwards. The probe bucket stays behind, locked; the retention is short in case url is not local.
    """
    client = s3_client(url)
    bucket = f"{LOCK_PROBE_PREFIX}{secrets.token_hex(6)}"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    retain_until = now + dt.timedelta(hours=1)
    shorter = now + dt.timedelta(minutes=30)

    def locked_version(name: str) -> tuple[str, str]:
        key = f"probe/{name}"
        put = client.put_object(Bucket=bucket, Key=key, Body=b"freezeframe lock probe\n", ChecksumAlgorithm="SHA256")
        version_id = put["VersionId"]
        client.put_object_retention(
            Bucket=bucket,
            Key=key,
            VersionId=version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until},
        )
        return key, version_id

    attempts: dict[str, Callable[[str, str], object]] = {
        "refuses_delete": lambda key, vid: client.delete_object(Bucket=bucket, Key=key, VersionId=vid),
        "refuses_shorten": lambda key, vid: client.put_object_retention(
            Bucket=bucket, Key=key, VersionId=vid, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter}
        ),
        "refuses_governance_switch": lambda key, vid: client.put_object_retention(
            Bucket=bucket, Key=key, VersionId=vid, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": retain_until}
        ),
        "refuses_bypass_delete": lambda key, vid: client.delete_object(
            Bucket=bucket, Key=key, VersionId=vid, BypassGovernanceRetention=True
        ),
    }
    try:
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        versions = {name: locked_version(name) for name in attempts}
    except (BotoCoreError, ClientError) as exc:
        raise StackError(f"could not set up the Object Lock probe on {url}: {exc}") from exc

    results: dict[str, bool] = {}
    for name, attempt in attempts.items():
        key, version_id = versions[name]
        try:
            refused = _refused(functools.partial(attempt, key, version_id), name)
            results[name] = refused and _lock_is_intact(client, bucket, key, version_id, retain_until)
        except BotoCoreError as exc:
            raise StackError(f"Object Lock probe {name} could not reach {url}: {exc}") from exc
    logger.info("Object Lock enforcement at %s (bucket %s): %s", url, bucket, results)
    return results
