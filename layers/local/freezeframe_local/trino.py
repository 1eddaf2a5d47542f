"""A real single-node Trino (the engine under Athena engine v3) for local mode and the tests.

Trino comes from Maven Central like the Kafka jars: the server core (``io.trino:trino-server-core:<v>:tar.gz``) and
the Hive connector plugin (``io.trino:trino-hive:<v>:zip``, unpacked into ``plugin/hive``), fetched once by ``mvn``
and unpacked under the cache (``~/.cache/freezeframe/trino-<v>``), never into the repository. Trino 476 needs Java 24
or newer: `find_java` looks for such a JDK (``FREEZEFRAME_TRINO_JAVA_HOME``, the `java` on PATH, the JDKs under
``/usr/lib/jvm``) and fails with a clear message when there is none; only Trino runs on it (Kafka stays on the
default Java).

The server is one coordinator that also runs the work, bound to loopback on a free port, with dynamic catalogs
(``catalog.management=dynamic``): `freezeframe.investigate.trino_sql` creates one Hive catalog per data location (a
local
directory or an S3 bucket) with a file metastore under the server's work directory. It is started detached, in its
own process group, so `freezeframe up --trino` can start it and `freezeframe down` stop it later by pid.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from freezeframe.contracts.config import cache_dir as config_cache_dir
from freezeframe.contracts.errors import StackError
from freezeframe_local.kafka import _exclusive_lock, _free_port, _tail, process_running
from freezeframe_local.s3 import stop_process

logger = logging.getLogger(__name__)

TRINO_VERSION = "476"  # the newest release Maven Central serves here (477 and later do not resolve)
MIN_JAVA = 24  # Trino 476's minimum Java feature release
ARTIFACTS = (f"io.trino:trino-server-core:{TRINO_VERSION}:tar.gz", f"io.trino:trino-hive:{TRINO_VERSION}:zip")
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
JVM_DIRS = (Path("/usr/lib/jvm"),)
HEAP = "1536m"
MAIN_CLASS = "io.trino.server.TrinoServer"

_MARKER_NAME = ".freezeframe-complete"
_MVN_TIMEOUT_S = 1200.0
_LOOPBACK = "127.0.0.1"
_JAVA_VERSION = re.compile(r'^JAVA_VERSION="(?P<feature>\d+)', re.MULTILINE)
# Servers started by this process: holding the Popen keeps it from being collected (and warning) while Trino runs.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class TrinoServer:
    """A coordinator started by `start_trino`; ``pid`` leads its own process group."""

    url: str
    pid: int
    workdir: Path
    log_path: Path

    @property
    def metastore_root(self) -> Path:
        """Where the file metastores of the server's catalogs live."""
        return self.workdir / "metastore"


def default_cache_dir() -> Path:
    return config_cache_dir()


def java_feature_version(java_home: Path) -> int | None:
    """The feature release (17, 21, 25, ...) of the JDK or JRE at ``java_home``, from its ``release`` file."""
    try:
        text = (java_home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = _JAVA_VERSION.search(text)
    return int(match["feature"]) if match else None


def find_java(preferred: Path | None = None, java_home: Path | None = None,
              search: tuple[Path, ...] = JVM_DIRS) -> Path:
    """The ``java`` binary of a JDK >= MIN_JAVA: ``preferred`` (FREEZEFRAME_TRINO_JAVA_HOME) if given, else the
    newest of ``java_home`` (the java on PATH) and the JDKs under ``search``. Raises `StackError` naming what it
    found when there is none."""
    if preferred is not None:
        version = java_feature_version(preferred)
        if version is None or version < MIN_JAVA or not (preferred / "bin" / "java").is_file():
            raise StackError(f"the Trino Java home {preferred} is not a Java {MIN_JAVA}+ JDK (found "
                             f"{version or 'no release file'}); Trino {TRINO_VERSION} needs Java {MIN_JAVA} or newer")
        return preferred / "bin" / "java"
    candidates = [java_home] if java_home is not None else []
    for root in search:
        if root.is_dir():
            candidates += sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    found: dict[Path, int] = {}
    for home in candidates:
        version = java_feature_version(home)
        if version is not None and (home / "bin" / "java").is_file():
            found[home] = version
    usable = sorted(((v, str(h)) for h, v in found.items() if v >= MIN_JAVA), reverse=True)
    if not usable:
        seen = ", ".join(f"{h} (Java {v})" for h, v in sorted(found.items())) or "none"
        raise StackError(f"Trino {TRINO_VERSION} needs Java {MIN_JAVA} or newer and none was found (JDKs seen: "
                         f"{seen}). Install a JDK {MIN_JAVA}+ (e.g. Temurin 25) and point FREEZEFRAME_TRINO_JAVA_HOME "
                         "at it; Kafka keeps using the default Java.")
    return Path(usable[0][1]) / "bin" / "java"


def ensure_trino(cache_dir: Path | None = None) -> Path:
    """The Trino server directory (``lib/``, ``plugin/hive``), fetched with Maven and unpacked on first use.

    Built in a temporary sibling and renamed into place once complete, under a file lock, so concurrent callers and
    interrupted downloads never see half a server.
    """
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    dist = cache / f"trino-{TRINO_VERSION}"
    if _is_complete(dist):
        return dist
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / f"trino-{TRINO_VERSION}.lock"):
        if _is_complete(dist):
            return dist
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is not on PATH; it is needed once to fetch Trino from Maven Central")
        started = time.monotonic()
        logger.info("Fetching Trino %s from Maven Central into %s", TRINO_VERSION, dist)
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".trino-{TRINO_VERSION}-") as tmp:
            downloads = Path(tmp) / "downloads"
            for artifact in ARTIFACTS:
                _maven_copy(mvn, artifact, downloads)
            staged = Path(tmp) / "dist"
            _unpack_server(downloads / f"trino-server-core-{TRINO_VERSION}.tar.gz", staged)
            _unpack_plugin(downloads / f"trino-hive-{TRINO_VERSION}.zip", staged / "plugin" / "hive")
            (staged / _MARKER_NAME).write_text(json.dumps({"trino_version": TRINO_VERSION,
                                                           "artifacts": list(ARTIFACTS)}), encoding="utf-8")
            if dist.exists():
                shutil.rmtree(dist)
            staged.rename(dist)
        logger.info("Fetched Trino %s in %.1f s", TRINO_VERSION, time.monotonic() - started)
    return dist


def start_trino(workdir: Path, port: int | None = None, java_home: Path | None = None, timeout: float = 240.0,
                java: Path | None = None) -> TrinoServer:
    """Start a detached single-node Trino with its config, data and log under ``workdir``; return once it runs
    queries. ``java_home`` is FREEZEFRAME_TRINO_JAVA_HOME (else a JDK >= 24 is searched for)."""
    java_bin = java or trino_java(java_home)
    dist = ensure_trino()
    workdir = workdir.resolve()
    (workdir / "etc").mkdir(parents=True, exist_ok=True)
    (workdir / "metastore").mkdir(exist_ok=True)
    port = port or _free_port()
    url = f"http://{_LOOPBACK}:{port}"
    config = workdir / "etc" / "config.properties"
    config.write_text(_config_properties(port, workdir, dist), encoding="utf-8")
    (workdir / "etc" / "log.properties").write_text("io.trino=WARN\nio.airlift=WARN\n", encoding="utf-8")
    log_path = workdir / "trino.log"
    command = [str(java_bin), f"-Xmx{HEAP}", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
               "-Djdk.attach.allowAttachSelf=true", "-Duser.timezone=UTC",
               "-Dfile.encoding=UTF-8", "--enable-native-access=ALL-UNNAMED", f"-Dconfig={config}",
               f"-Dlog.levels-file={workdir / 'etc' / 'log.properties'}", "-cp", str(dist / "lib" / "*"), MAIN_CLASS]
    started = time.monotonic()
    with log_path.open("ab") as log:
        log.write(f"=== freezeframe: starting Trino {TRINO_VERSION} on {url} at {time.ctime()} ===\n".encode())
        log.flush()
        process = subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    _CHILDREN[process.pid] = process
    server = TrinoServer(url, process.pid, workdir, log_path)
    try:
        _wait_ready(process, server, started + timeout)
    except BaseException:
        stop_trino(process.pid)
        raise
    logger.info("Trino %s on %s ready after %.1f s", TRINO_VERSION, url, time.monotonic() - started)
    return server


def stop_trino(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group, SIGKILL after ``timeout``; gone already is fine."""
    child = _CHILDREN.pop(pid, None)
    if process_running(pid):
        stop_process(pid, timeout)
    if child is not None:
        child.poll()  # reaped already by stop_process, or now


def trino_java(java_home: Path | None = None) -> Path:
    """The java binary Trino runs on: ``java_home``, else FREEZEFRAME_TRINO_JAVA_HOME, else the newest JDK >= 24
    found; raises `StackError` with what it found when there is none."""
    return find_java(java_home or _configured_java_home(), _path_java_home())


def _configured_java_home() -> Path | None:
    from freezeframe.contracts.config import settings

    return settings().trino_java_home


def _path_java_home() -> Path | None:
    """The JDK of the ``java`` on PATH (resolved through its symlinks), if any."""
    java = shutil.which("java")
    return Path(os.path.realpath(java)).parent.parent if java else None


def _is_complete(dist: Path) -> bool:
    try:
        marker = json.loads((dist / _MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("trino_version") == TRINO_VERSION and (dist / "plugin" / "hive").is_dir()


def _maven_copy(mvn: str, artifact: str, output_dir: Path) -> None:
    command = [mvn, "-q", "-B", "-Dstyle.color=never", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={artifact}",
               f"-DoutputDirectory={output_dir}"]
    try:
        result = subprocess.run(command, cwd=output_dir.parent, capture_output=True, text=True,
                                timeout=_MVN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Maven did not fetch {artifact} within {_MVN_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise StackError(f"Maven failed to fetch {artifact} (exit {result.returncode}):\n"
                         f"{_tail((result.stdout + result.stderr).splitlines())}")


def _unpack_server(archive: Path, target: Path) -> None:
    """The tarball's single top folder (trino-server-core-<v>/) becomes ``target``."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target.parent / "unpacked", filter="data")
    (top,) = (target.parent / "unpacked").iterdir()
    top.rename(target)
    if not (target / "lib").is_dir():
        raise StackError(f"{archive.name} has no lib/ folder; not a Trino server archive")


def _unpack_plugin(archive: Path, target: Path) -> None:
    """The zip's single top folder (trino-hive-<v>/) becomes ``target`` (the server's plugin/hive)."""
    staging = target.parent / ".hive-unpacked"
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(staging)  # noqa: S202 - zipfile drops absolute paths and '..' from member names
    (top,) = staging.iterdir()
    top.rename(target)
    staging.rmdir()
    if not any(target.glob("*.jar")):
        raise StackError(f"{archive.name} holds no jars; not a Trino plugin archive")


def _config_properties(port: int, workdir: Path, dist: Path) -> str:
    properties = {
        "node.environment": "freezeframe",
        "node.id": str(uuid.uuid4()),
        "node.bind-ip": _LOOPBACK,
        "node.internal-address": _LOOPBACK,
        "coordinator": "true",
        "node-scheduler.include-coordinator": "true",
        "http-server.http.port": str(port),
        "discovery.uri": f"http://{_LOOPBACK}:{port}",
        "plugin.dir": str(dist / "plugin"),
        "catalog.management": "dynamic",
        # Catalogs live as long as the server; `trino_sql` creates them again when it finds them missing.
        "catalog.store": "memory",
        "query.max-memory": "512MB",
        "query.max-memory-per-node": "512MB",
        "web-ui.enabled": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def _wait_ready(process: subprocess.Popen[bytes], server: TrinoServer, deadline: float) -> None:
    """Until /v1/info says the server has finished starting (it then accepts queries)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"Trino exited with {process.returncode} while starting:\n{_log_tail(server.log_path)}")
        try:
            with urllib.request.urlopen(f"{server.url}/v1/info", timeout=2) as reply:  # noqa: S310 - loopback
                if not json.loads(reply.read()).get("starting", True):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise StackError(f"Trino did not start within the time allowed:\n{_log_tail(server.log_path)}")


def _log_tail(path: Path) -> str:
    try:
        return _tail(path.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return "(no log)"
