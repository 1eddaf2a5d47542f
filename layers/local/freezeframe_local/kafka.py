"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) for local mode and tests.

The broker runs from Maven Central jars resolved by ``kafka-pom.xml`` and cached outside the repository
(``default_cache_dir()``), so no Docker and no Kafka tarball are needed, only ``java`` (17+) and ``mvn``.
It is started detached from the calling process, so a CLI can start it, exit, and stop it later by pid.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from freezeframe.contracts.config import cache_dir as config_cache_dir
from freezeframe.contracts.errors import StackError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.2"  # must equal <kafka.version> in kafka-pom.xml
HEALTH_TOPIC = "freezeframe.health"

_POM_RESOURCE = "kafka-pom.xml"
_MARKER_NAME = ".freezeframe-complete"
_MVN_TIMEOUT_S = 900.0
_LOG_TAIL_LINES = 40
_LOOPBACK = "127.0.0.1"
_PROC = Path("/proc")
_APPENDED_PROPERTIES = ("listeners", "advertised.listeners", "listener.security.protocol.map")
# Brokers started by this process. Holding the Popen keeps it from being collected while the broker runs
# (which warns) and lets stop_kafka reap it through Popen, so its returncode stays consistent.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    """A broker started by ``start_kafka``; ``pid`` leads its own process group."""

    bootstrap: str
    pid: int
    workdir: Path
    log_path: Path


def default_cache_dir() -> Path:
    """Where downloaded jars live: ``$FREEZEFRAME_CACHE_DIR`` or ``~/.cache/freezeframe``, never the repo."""
    return config_cache_dir()


def ensure_kafka_jars(cache_dir: Path | None = None) -> Path:
    """Return a directory holding the broker's runtime jars, resolving them with Maven on first use.

    The directory is built in a temporary sibling and renamed into place only once complete, under a file
    lock, so concurrent callers and interrupted downloads never see a half-filled classpath.
    """
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    pom = resources.files("freezeframe_local").joinpath(_POM_RESOURCE).read_bytes()
    pom_sha256 = hashlib.sha256(pom).hexdigest()
    dist = cache / f"kafka-{KAFKA_VERSION}"
    libs = dist / "libs"
    if _is_complete(dist, pom_sha256):
        return libs

    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache / f"kafka-{KAFKA_VERSION}.lock"):
        if _is_complete(dist, pom_sha256):  # another process finished while we waited for the lock
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is not on PATH; it is needed once to fetch the Kafka jars")
        started = time.monotonic()
        logger.info("Fetching Kafka %s jars from Maven Central into %s", KAFKA_VERSION, dist)
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".kafka-{KAFKA_VERSION}-") as tmp:
            build_dir = Path(tmp) / "build"
            build_dir.mkdir()
            (build_dir / "pom.xml").write_bytes(pom)
            staged = Path(tmp) / "dist"
            _run_maven(mvn, build_dir, staged / "libs")
            _check_classpath(staged / "libs")
            marker = {"kafka_version": KAFKA_VERSION, "pom_sha256": pom_sha256}
            (staged / _MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
            if dist.exists():  # left by an interrupted run or built from an older pom
                shutil.rmtree(dist)
            staged.rename(dist)
        logger.info("Fetched Kafka %s jars in %.1f s", KAFKA_VERSION, time.monotonic() - started)
    return libs


def start_kafka(workdir: Path, port: int | None = None, timeout: float = 90.0,
                extra_properties: Mapping[str, str] | None = None) -> KafkaBroker:
    """Start a detached single-node KRaft broker with its data, config and log under ``workdir``.

    ``extra_properties`` are added to the generated server.properties: ``listeners``, ``advertised.listeners`` and
    ``listener.security.protocol.map`` are appended to the generated PLAINTEXT and CONTROLLER ones (which the health
    check and the inter-broker traffic keep using), any other key is set or replaced (TLS and SASL listeners).

    Reuses formatted storage already in ``workdir`` (topics survive a restart). Returns once a real
    produce/consume round trip succeeds; otherwise kills the broker and raises ``StackError``. ``timeout``
    covers formatting and start-up, not the one-time jar download.
    """
    java = shutil.which("java")
    if java is None:
        raise StackError("java is not on PATH; the local Kafka broker needs Java 17 or newer")
    libs = ensure_kafka_jars()
    started = time.monotonic()
    deadline = started + timeout
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    log_path = workdir / "kafka.log"
    broker_port = _check_port_free(port) if port is not None else _free_port()
    controller_port = _free_port(exclude={broker_port})
    bootstrap = f"{_LOOPBACK}:{broker_port}"

    config_path = workdir / "server.properties"
    config_path.write_text(_server_properties(broker_port, controller_port, data_dir, extra_properties),
                           encoding="utf-8")
    log4j_path = workdir / "log4j2.xml"
    log4j_path.write_text(_log4j2_config(log_path), encoding="utf-8")
    jvm = [
        java,
        "-Xmx512m",
        f"-Dlog4j2.configurationFile={log4j_path}",
        f"-Dkafka.logs.dir={workdir}",
        "-Djava.awt.headless=true",
        "-cp",
        str(libs / "*"),
    ]
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(f"=== freezeframe: starting Kafka {KAFKA_VERSION} on {bootstrap} at {time.ctime()} ===\n")

    _format_storage(jvm, config_path, data_dir, log_path, deadline)

    with log_path.open("ab") as log_file:
        # A new session detaches the broker from the caller's terminal and process group, so it outlives a CLI
        # that exits and can be stopped as a group later.
        process = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(config_path)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    broker = KafkaBroker(bootstrap=bootstrap, pid=process.pid, workdir=workdir, log_path=log_path)
    logger.info("Started Kafka broker pid %d on %s, waiting for it to become healthy", process.pid, bootstrap)
    try:
        _wait_healthy(process, broker, deadline, timeout)
    except BaseException:
        # Also on Ctrl-C: a broker that never became healthy must not be left running unowned.
        stop_kafka(process.pid, timeout=10.0)
        raise
    logger.info("Kafka broker on %s healthy after %.1f s", bootstrap, time.monotonic() - started)
    return broker


def health_check(bootstrap: str, timeout: float = 30.0, client_options: Mapping[str, Any] | None = None) -> float:
    """Produce a unique record to ``freezeframe.health`` and read it back; return the seconds it took.

    ``client_options`` are the clients' security options (``freezeframe.adapters.kafka_auth.client_options``)."""
    security = dict(client_options or {})
    started = time.monotonic()
    deadline = started + timeout
    payload = f"freezeframe-health-{uuid.uuid4().hex}".encode()
    try:
        create_topics(bootstrap, [HEALTH_TOPIC], timeout=timeout, client_options=security)
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, max_block_ms=_ms_left(deadline), **_client_timeouts(deadline), **security
        )
        try:
            metadata = producer.send(HEALTH_TOPIC, value=payload).get(timeout=_seconds_left(deadline))
        finally:
            producer.close(timeout=5)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **_client_timeouts(deadline),
                                 **security)
        try:
            partition = TopicPartition(HEALTH_TOPIC, metadata.partition)
            consumer.assign([partition])
            consumer.seek(partition, metadata.offset)
            found = _poll_for(consumer, payload, deadline)
        finally:
            consumer.close(autocommit=False)
    except KafkaError as exc:
        raise StackError(f"Kafka health check against {bootstrap} failed: {exc!r}") from exc
    if not found:
        raise StackError(f"Kafka health check against {bootstrap}: produced record not read back within {timeout} s")
    return time.monotonic() - started


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1, *, timeout: float = 30.0,
                  client_options: Mapping[str, Any] | None = None, replication_factor: int = 1) -> None:
    """Create topics and wait until each has a leader; existing topics are fine. ``client_options``: the admin
    client's security options (``kafka_auth.client_options``)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return
    deadline = time.monotonic() + timeout
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **_client_timeouts(deadline),
                                 **dict(client_options or {}))
        try:
            response = admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": replication_factor} for name in wanted},
                timeout_ms=_ms_left(deadline),
                raise_errors=False,
            )
            failures = [
                f"{topic['name']}: error {topic['error_code']} {topic.get('error_message') or ''}".strip()
                for topic in response["topics"]
                if topic["error_code"] not in (0, TopicAlreadyExistsError.errno)
            ]
            if failures:
                raise StackError(f"Could not create Kafka topics on {bootstrap}: {'; '.join(failures)}")
            # The create response only means the controller accepted it; producers need a partition leader.
            admin.wait_for_topics(wanted, timeout_ms=_ms_left(deadline))
        finally:
            admin.close()
    except KafkaError as exc:
        raise StackError(f"Could not create Kafka topics {wanted} on {bootstrap}: {exc!r}") from exc


def stop_kafka(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the broker's process group, wait for it to exit, SIGKILL after ``timeout``; gone already is fine."""
    if not _is_running(pid):
        logger.info("Kafka broker pid %d is already gone", pid)
        return
    if not _looks_like_kafka(pid):
        # The broker died and its pid was reused; signalling the new owner would kill an unrelated process.
        logger.warning("pid %d is not a Kafka broker any more; not signalling it", pid)
        return
    _signal_group(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout):
        logger.info("Kafka broker pid %d stopped", pid)
        return
    logger.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; sending SIGKILL", pid, timeout)
    _signal_group(pid, signal.SIGKILL)
    if not _wait_exit(pid, 10.0):
        raise StackError(f"Kafka broker pid {pid} did not exit after SIGKILL")


def process_running(pid: int) -> bool:
    """True while pid is a live process (a zombie left by a non-reaping init counts as gone)."""
    return _is_running(pid)


def _is_complete(dist: Path, pom_sha256: str) -> bool:
    marker = dist / _MARKER_NAME
    if not marker.is_file():
        return False
    recorded = json.loads(marker.read_text(encoding="utf-8"))
    return bool(recorded.get("kafka_version") == KAFKA_VERSION and recorded.get("pom_sha256") == pom_sha256)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(mvn: str, build_dir: Path, output_dir: Path) -> None:
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(build_dir / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={output_dir}",
    ]
    try:
        result = subprocess.run(
            command, cwd=build_dir, capture_output=True, text=True, timeout=_MVN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Maven did not fetch the Kafka jars within {_MVN_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        output = _tail((result.stdout + result.stderr).splitlines())
        raise StackError(f"Maven failed to fetch the Kafka jars (exit {result.returncode}):\n{output}")


def _check_classpath(libs: Path) -> None:
    jars = {jar.name for jar in libs.glob("*.jar")}
    expected = [f"kafka_2.13-{KAFKA_VERSION}.jar", "log4j-core-", "log4j-slf4j-impl-", "slf4j-api-"]
    missing = [name for name in expected if not any(jar.startswith(name) for jar in jars)]
    if missing:
        raise StackError(
            f"Resolved Kafka classpath in {libs} lacks {missing}; kafka-pom.xml and KAFKA_VERSION disagree?"
        )


def _free_port(exclude: set[int] | None = None) -> int:
    # Binding port 0 lets the kernel pick a free port; the short race until Kafka binds it is acceptable locally.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if not exclude or port not in exclude:
            return port


def _check_port_free(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The JVM binds with SO_REUSEADDR, so a port in TIME_WAIT after a stop is free for the broker: check alike.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_LOOPBACK, port))
        except OSError as exc:
            raise StackError(f"Cannot start Kafka on {_LOOPBACK}:{port}: {exc}") from exc
    return port


def _server_properties(broker_port: int, controller_port: int, data_dir: Path,
                       extra: Mapping[str, str] | None = None) -> str:
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{_LOOPBACK}:{controller_port}",
        "listeners": f"PLAINTEXT://{_LOOPBACK}:{broker_port},CONTROLLER://{_LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{_LOOPBACK}:{broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir).replace("\\", "\\\\"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        # One node cannot meet the production defaults (RF 3) for the internal topics.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The default 50 partitions make the first consumer-group join take seconds on a laptop.
        "offsets.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    for key, value in (extra or {}).items():
        settings[key] = f"{settings[key]},{value}" if key in _APPENDED_PROPERTIES else value
    lines = ["# Written by freezeframe_local.kafka; regenerated on every start."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _log4j2_config(log_path: Path) -> str:
    # The shutdown hook is disabled so Kafka's own shutdown messages still reach the file after SIGTERM.
    # The file is opened in append mode, as is the broker's stdout/stderr, so both land in one readable log.
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <File name="file" fileName={quoteattr(str(log_path))} append="true" immediateFlush="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="INFO">
      <AppenderRef ref="file"/>
    </Root>
  </Loggers>
</Configuration>
"""


def _format_storage(jvm: list[str], config_path: Path, data_dir: Path, log_path: Path, deadline: float) -> None:
    if (data_dir / "meta.properties").is_file():
        # Formatting again needs the same cluster id and changes nothing; the broker reuses the storage as is.
        logger.info("Reusing formatted Kafka storage in %s", data_dir)
        return
    command = [*jvm, "kafka.tools.StorageTool", "format", "-t", _random_cluster_id(), "-c", str(config_path)]
    budget = _seconds_left(deadline)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=budget, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"Kafka StorageTool format did not finish within {budget:.0f} s") from exc
    output = result.stdout + result.stderr
    with log_path.open("a", encoding="utf-8") as log_file:
        log_file.write(output)
    if result.returncode != 0:
        raise StackError(f"Kafka StorageTool format failed (exit {result.returncode}):\n{_tail(output.splitlines())}")


def _random_cluster_id() -> str:
    # Same encoding as Kafka's Uuid.randomUuid() (url-safe base64 of 16 random bytes, no padding), made here to
    # save a JVM start. Like Kafka's generator, skip ids beginning with '-', which a CLI would take for an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def _wait_healthy(process: subprocess.Popen[bytes], broker: KafkaBroker, deadline: float, timeout: float) -> None:
    port = int(broker.bootstrap.rsplit(":", 1)[1])
    last_error: StackError | None = None
    while True:
        exit_code = process.poll()
        if exit_code is not None:
            raise StackError(
                f"Kafka broker exited with code {exit_code} during start-up; log tail:\n{_log_tail(broker)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = f" (last health check: {last_error})" if last_error else " (port never opened)"
            raise StackError(f"Kafka broker not healthy within {timeout:.0f} s{reason}; log tail:\n{_log_tail(broker)}")
        # Probe the port first: kafka-python logs every refused connection, which would bury real errors.
        if _port_open(port):
            try:
                health_check(broker.bootstrap, timeout=min(remaining, 20.0))
                return
            except StackError as exc:
                last_error = exc
                logger.debug("Kafka on %s not healthy yet: %s", broker.bootstrap, exc)
        time.sleep(0.25)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((_LOOPBACK, port)) == 0


def _poll_for(consumer: KafkaConsumer, payload: bytes, deadline: float) -> bool:
    while time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=min(_ms_left(deadline), 1000))
        if any(record.value == payload for records in batches.values() for record in records):
            return True
    return False


def _seconds_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _ms_left(deadline: float) -> int:
    return int(_seconds_left(deadline) * 1000)


def _client_timeouts(deadline: float) -> dict[str, int]:
    # kafka-python's consumer requires request_timeout_ms > fetch_max_wait_ms (500 by default).
    return {"request_timeout_ms": max(_ms_left(deadline), 1000), "bootstrap_timeout_ms": _ms_left(deadline)}


def _tail(lines: list[str]) -> str:
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _log_tail(broker: KafkaBroker) -> str:
    try:
        text = broker.log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return _tail(text.splitlines())


def _is_running(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    # Not started by this process (an earlier CLI run started it): ask the kernel.
    if not (_PROC / "self").exists():  # not Linux: no zombie detection, ask with signal 0
        return _signal_zero(pid)
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return False
    # A zombie has exited; only its parent can reap it. The state follows the ")" closing the command name.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _looks_like_kafka(pid: int) -> bool:
    if not (_PROC / "self").exists():  # not Linux: trust the caller's pid
        return True
    try:
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"kafka.Kafka" in cmdline.split(b"\0")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # start_kafka made the broker a group leader: reach any helpers it spawned too
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        logger.debug("pid %d exited before signal %s", pid, sig.name)


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True
