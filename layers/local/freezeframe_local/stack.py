"""`freezeframe up` / `down`: the local stack of real services, recorded in <state_dir>/stack/state.json.

- Apache Kafka 4.x (KRaft, single node) from Maven Central jars cached outside the repo;
- LocalStack S3, which enforces Object Lock (checked by a probe at start-up: it must refuse deleting a locked
  version and shortening COMPLIANCE retention, or `up` fails);
- the local gateway (Function URL + Lambda Invoke API) running the real handlers against both;
- with ``--trino``, a single-node Trino (the engine under Athena v3) for ``freezeframe query --engine trino``, which
  reads the stack's evidence bucket through its S3 endpoint (see `freezeframe_local.trino`).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from freezeframe.adapters import kms as kms_io
from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import JOBS_TOPIC, K8S_TOPIC, Settings, child_env, env_overrides
from freezeframe.contracts.errors import StackError
from freezeframe_local import kafka as kafka_stack
from freezeframe_local import s3 as s3_stack
from freezeframe_local import trino as trino_stack
from freezeframe_local import tsa as tsa_stack

logger = logging.getLogger(__name__)
STATE_SCHEMA = "freezeframe.stack/v1"


@dataclass(frozen=True, slots=True)
class StackState:
    kafka_bootstrap: str
    kafka_pid: int
    s3_endpoint: str
    s3_pid: int
    gateway_url: str
    gateway_pid: int
    token_file: str
    workdir: str
    trino_url: str | None = None
    trino_pid: int | None = None
    # Custody: LocalStack's KMS key that signs evidence, and the local RFC 3161 time-stamping authority.
    signing_key_id: str = ""
    tsa_url: str = ""
    tsa_pid: int = 0
    tsa_ca_file: str = ""
    pagerduty_secret_file: str = ""  # the PagerDuty v3 signing secret the gateway verifies with
    api_token_file: str = ""  # the bearer token of POST /v1/freeze and GET /v1/incidents/<id>

    def to_dict(self) -> dict[str, Any]:
        return {"schema": STATE_SCHEMA, **{name: getattr(self, name) for name in self.__slots__}}


def state_path(config: Settings) -> Path:
    return config.state_dir / "stack" / "state.json"


def load_state(config: Settings) -> StackState | None:
    path = state_path(config)
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw.pop("schema", None)
    return StackState(**raw)


def apply_state(config: Settings, state: StackState | None) -> Settings:
    """Settings pointed at a running stack, unless the environment already names its own endpoints."""
    if state is None:
        return config
    return config.with_(
        s3_endpoint=config.s3_endpoint or state.s3_endpoint,
        kafka_bootstrap=config.kafka_bootstrap or state.kafka_bootstrap,
        lambda_endpoint=config.lambda_endpoint or state.gateway_url,
        trino_url=config.trino_url or state.trino_url,
        signing_key_id=config.signing_key_id or state.signing_key_id or None,
        kms_endpoint=config.kms_endpoint or (state.s3_endpoint if state.signing_key_id else None),
        tsa_url=config.tsa_url or state.tsa_url or None,
        tsa_ca_file=config.tsa_ca_file or (Path(state.tsa_ca_file) if state.tsa_ca_file else None),
    )


def trino_metastore(config: Settings, state: StackState | None) -> Path:
    """Where `query --engine trino` keeps its catalogs' file metastores: beside the stack's Trino, else in the state
    directory (either way on this machine, never in the evidence bucket)."""
    root = Path(state.workdir) / "trino" if state is not None and state.trino_url else config.state_dir / "trino"
    return (root / "metastore").resolve()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def up(config: Settings, trino: bool = False) -> StackState:
    existing = load_state(config)
    if existing is not None and _alive(existing):
        if trino and not (existing.trino_pid and kafka_stack.process_running(existing.trino_pid)):
            return _save(config, _with_trino(existing))
        logger.info("stack already running")
        return existing
    workdir = (config.state_dir / "stack").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started: list[int] = []
    try:
        broker = kafka_stack.start_kafka(workdir / "kafka")
        started.append(broker.pid)
        kafka_stack.create_topics(broker.bootstrap, [config.segments_topic, K8S_TOPIC, JOBS_TOPIC])
        s3_stack.ensure_localstack()
        endpoint = s3_stack.start_localstack(workdir / "s3")
        started.append(int(endpoint.pid or 0))
        probe = s3_stack.check_object_lock_enforcement(endpoint.url)
        if not all(probe.values()):
            raise StackError(f"S3 endpoint {endpoint.url} does not enforce Object Lock: {probe}")
        token_file = _credential(workdir / "alertmanager.token")
        pagerduty_file = _credential(workdir / "pagerduty.secret")
        api_token_file = _credential(workdir / "api.token")
        signing_key_id = kms_io.create_signing_key(
            kms_io.client(config.with_(kms_endpoint=endpoint.url)), "freezeframe-evidence-signing",
            "freezeframe local stack: signs evidence documents")
        tsa_url, tsa_pid = tsa_stack.start_tsa(workdir / "tsa", free_port())
        started.append(tsa_pid)
        tsa_ca_file = tsa_stack.Authority(workdir / "tsa").ca_pem
        port = free_port()
        gateway_url = f"http://127.0.0.1:{port}"
        stack_settings = config.with_(s3_endpoint=endpoint.url, kafka_bootstrap=broker.bootstrap,
                                      lambda_endpoint=gateway_url, alertmanager_token_file=token_file,
                                      alertmanager_token_env=None, state_dir=config.state_dir.resolve(),
                                      signing_key_id=signing_key_id, kms_endpoint=endpoint.url, tsa_url=tsa_url,
                                      tsa_ca_file=tsa_ca_file,
                                      pagerduty_secrets_file=pagerduty_file, pagerduty_secrets_env=None,
                                      pagerduty_secret_arn=None, api_token_file=api_token_file, api_token_env=None,
                                      api_token_secret_arn=None)
        s3io.ensure_buckets(s3io.client(stack_settings), stack_settings)
        gateway_pid = _start_gateway(stack_settings, port, workdir)
        started.append(gateway_pid)
        state = StackState(broker.bootstrap, broker.pid, endpoint.url, int(endpoint.pid or 0), gateway_url,
                           gateway_pid, str(token_file), str(workdir), signing_key_id=signing_key_id,
                           tsa_url=tsa_url, tsa_pid=tsa_pid, tsa_ca_file=str(tsa_ca_file),
                           pagerduty_secret_file=str(pagerduty_file), api_token_file=str(api_token_file))
        if trino:
            state = _with_trino(state)
    except BaseException:
        for pid in started:
            s3_stack.stop_process(pid)
        raise
    return _save(config, state)


def _with_trino(state: StackState) -> StackState:
    server = trino_stack.start_trino(Path(state.workdir) / "trino")
    return replace(state, trino_url=server.url, trino_pid=server.pid)


def _save(config: Settings, state: StackState) -> StackState:
    state_path(config).write_text(json.dumps(state.to_dict(), indent=2), encoding="utf-8")
    return state


def _credential(path: Path) -> Path:
    """A random credential in a file only its owner reads, made once (a restarted stack keeps its credentials)."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32), encoding="utf-8")
    return path


def exports(state: StackState) -> dict[str, str]:
    """The settings that point the agent, the CLI and curl at the stack: endpoints and credential files."""
    out = {"FREEZEFRAME_S3_ENDPOINT": state.s3_endpoint, "FREEZEFRAME_KAFKA_BOOTSTRAP": state.kafka_bootstrap,
           "FREEZEFRAME_LAMBDA_ENDPOINT": state.gateway_url, "FREEZEFRAME_ALERTMANAGER_TOKEN_FILE": state.token_file}
    if state.pagerduty_secret_file:
        out["FREEZEFRAME_PAGERDUTY_SECRETS_FILE"] = state.pagerduty_secret_file
    if state.api_token_file:
        out["FREEZEFRAME_API_TOKEN_FILE"] = state.api_token_file
    if state.signing_key_id:
        out.update({"FREEZEFRAME_SIGNING_KEY_ID": state.signing_key_id, "FREEZEFRAME_KMS_ENDPOINT": state.s3_endpoint,
                    "FREEZEFRAME_TSA_URL": state.tsa_url, "FREEZEFRAME_TSA_CA_FILE": state.tsa_ca_file})
    return out


def down(config: Settings) -> StackState | None:
    state = load_state(config)
    if state is None:
        return None
    if state.trino_pid:
        trino_stack.stop_trino(state.trino_pid)
    s3_stack.stop_process(state.gateway_pid)
    if state.tsa_pid:
        s3_stack.stop_process(state.tsa_pid)
    s3_stack.stop_process(state.s3_pid)
    kafka_stack.stop_kafka(state.kafka_pid)
    state_path(config).unlink()
    return state


def _alive(state: StackState) -> bool:
    return all(kafka_stack.process_running(pid) for pid in (state.kafka_pid, state.s3_pid, state.gateway_pid))


def _start_gateway(config: Settings, port: int, workdir: Path, timeout_s: float = 30.0) -> int:
    env = child_env({**env_overrides(config), "POWERTOOLS_TRACE_DISABLED": "true",
                     "POWERTOOLS_METRICS_NAMESPACE": "freezeframe", "POWERTOOLS_SERVICE_NAME": "freezeframe"})
    log = open(workdir / "gateway.log", "ab")  # noqa: SIM115 - handed to the detached child
    proc = subprocess.Popen([sys.executable, "-m", "freezeframe_local.gateway", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"gateway exited with {proc.returncode}; see {workdir / 'gateway.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_freezeframe/health", timeout=1) as reply:  # noqa: S310
                if reply.status == 200:
                    return proc.pid
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise StackError(f"gateway did not answer on port {port} within {timeout_s:.0f}s")
