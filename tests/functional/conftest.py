"""The functional tier: the real core and the real Lambda handlers on an in-memory object store with Object Lock
semantics (memstore.MemoryS3), a file-backed segment bus and recording stand-ins for the dispatcher (Lambda
Invoke, Step Functions). No LocalStack, no Kafka, no network: the whole tier runs in well under two minutes."""

from __future__ import annotations

import inspect
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from freezeframe_local.functions import LocalContext, load_handler
from freezeframe_local.kafka_source import lambda_kafka_event
from freezeframe_local.tsa import Authority, LocalTimeStamper, ensure_authority

from freezeframe.adapters import invoke, kms
from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import FileBus
from freezeframe.adapters.local_signer import LocalKeySigner
from freezeframe.contracts.config import Settings
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, SegmentRecord, from_ns
from freezeframe.custody import chain
from freezeframe.dissect import finalize
from tests.functional.memstore import MemoryS3

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "tests" / "fixtures" / "sample.pcap"
ALERTMANAGER_TOKEN = "functional-am-token"  # noqa: S105 - test credentials
API_TOKEN = "functional-api-token"  # noqa: S105
PAGERDUTY_SECRET = "functional-pd-secret"  # noqa: S105
CALLER_ARN = "arn:aws:sts::000000000000:assumed-role/freezeframe-functional/functional"
TSA_URL = "http://tsa.functional.invalid/tsr"
STATE_MACHINE = "arn:aws:states:us-east-1:000000000000:stateMachine:freezeframe-dissect"


class RecordingLambda:
    """The Lambda Invoke API's asynchronous answer (202), recording each invocation."""

    def __init__(self) -> None:
        self.invocations: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        assert InvocationType == "Event"
        self.invocations.append((FunctionName, json.loads(Payload)))
        return {"StatusCode": 202}


class RecordingStepFunctions:
    """StartExecution with Step Functions' rule that a name is used once (ExecutionAlreadyExists)."""

    def __init__(self) -> None:
        self.executions: dict[str, dict[str, Any]] = {}

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, Any]:  # noqa: A002
        if name in self.executions:
            raise ClientError({"Error": {"Code": "ExecutionAlreadyExists", "Message": name}}, "StartExecution")
        self.executions[name] = {"stateMachineArn": stateMachineArn, "input": json.loads(input)}
        return {"executionArn": f"{stateMachineArn}:{name}"}


@dataclass
class Harness:
    settings: Settings
    store: MemoryS3
    lambdas: RecordingLambda
    step_functions: RecordingStepFunctions
    bus: FileBus
    patch: pytest.MonkeyPatch
    reports: list[str]  # the incidents finalize asked to render a report for
    records: list[SegmentRecord] = field(default_factory=list)

    def handler(self, function: str) -> Callable[[dict[str, Any], Any], Any]:
        return load_handler(self.settings, function)

    def module_of(self, function: str) -> dict[str, Any]:
        return inspect.unwrap(self.handler(function)).__globals__

    def call(self, function: str, event: dict[str, Any]) -> Any:
        return self.handler(function)(event, LocalContext(f"freezeframe-{function}"))

    def replay(self, node: str | None = None, *, retime: bool = True) -> list[SegmentRecord]:
        """The real agent replays the sample capture into the store and onto the file bus; `retime` False keeps the
        capture's own (past) timestamps, so a freeze of them opens no hold."""
        from freezeframe_agent.main import run_replay

        config = self.settings if node is None else self.settings.with_(node_name=node)
        records = run_replay(config, SAMPLE, speedup=1000.0, retime=retime, s3=self.store, bus=self.bus)
        self.records += records
        return records

    def kafka_event(self, topic: str, keys: set[str] | None = None) -> dict[str, Any]:
        """The event Lambda's Kafka source delivers for the bus's records of `topic` (those of segment `keys`)."""
        records = [SimpleNamespace(topic=r.topic, partition=r.partition, offset=r.offset, timestamp=r.timestamp_ms,
                                   key=r.key, value=json.dumps(r.value))
                   for r in self.bus.read(topic) if keys is None or r.value.get("key") in keys]
        return lambda_kafka_event(records, "memory:9092")

    def request(self, incident_id: str, records: list[SegmentRecord], *, mode: str = "COMPLIANCE",
                days: int = 1, **changes: Any) -> FreezeRequest:
        start = from_ns(min(r.start_ns for r in records)) - timedelta(seconds=1)
        end = from_ns(max(r.end_ns for r in records)) + timedelta(seconds=1)
        fields: dict[str, Any] = {"incident_id": incident_id, "source": "api", "title": "functional",
                                  "severity": "critical", "window_start": start, "window_end": end,
                                  "scope": Scope(self.settings.cluster),
                                  # whole seconds: what a request carries through JSON
                                  "lock": LockSpec(mode, (datetime.now(UTC) + timedelta(days=days))
                                                   .replace(microsecond=0))}
        fields.update(changes)
        return FreezeRequest(**fields)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tier's promise, enforced for Python code: a connection to anything but loopback fails the test."""
    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"the functional tier tried the network: {address}")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture(scope="session")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A local RFC 3161 time-stamping authority (openssl), made once per session."""
    return ensure_authority(tmp_path_factory.mktemp("tsa"))


@pytest.fixture
def settings(tmp_path: Path, authority: Authority) -> Settings:
    # Evidence is signed with a local P-256 key (the KMS signer's stand-in the embedded demo uses) and time-stamped
    # by the local authority in-process (see harness), so custody chains are written and verify checks them.
    signing_key = tmp_path / "keys" / "signing.pem"
    LocalKeySigner.generate(signing_key)
    return Settings(signing_key_file=signing_key, tsa_url=TSA_URL, tsa_ca_file=authority.ca_pem,
                    cluster="functional", node_name="node-a", raw_bucket="ff-raw", evidence_bucket="ff-evidence",
                    lock_retain_days=1, functions_dir=REPO / "functions", bus_dir=tmp_path / "bus",
                    spool_dir=tmp_path / "spool", state_dir=tmp_path / "state",
                    alertmanager_token_env=ALERTMANAGER_TOKEN, api_token_env=API_TOKEN,
                    pagerduty_secrets_env=PAGERDUTY_SECRET, dissect_state_machine=STATE_MACHINE)


@pytest.fixture
def harness(settings: Settings, authority: Authority, monkeypatch: pytest.MonkeyPatch, handler_env: Any
            ) -> Iterator[Harness]:
    """The settings (also in the handlers' environment), buckets made as `freezeframe up` makes them, and every
    network seam replaced: the object store, the Lambda and Step Functions clients, STS's caller identity, the
    time-stamping authority's HTTP and the report's DuckDB S3 reads."""
    store = MemoryS3()
    s3io.ensure_buckets(store, settings)
    lambdas, step_functions = RecordingLambda(), RecordingStepFunctions()
    monkeypatch.setattr(s3io, "client", lambda _config: store)
    monkeypatch.setattr(invoke, "_client", lambda _config: lambdas)
    monkeypatch.setattr(invoke, "_sfn_client", lambda _config: step_functions)
    # STS GetCallerIdentity: the principal a custody link names (the function's role session in AWS).
    monkeypatch.setattr(kms, "caller_arn", lambda _config: CALLER_ARN)
    # The HTML report queries the parts through DuckDB's own S3 reader (C++, outside the adapters), which has no
    # in-memory stand-in; the integration tier renders it (tests/integration/test_report.py). Here finalize's
    # request for it is recorded.
    reports: list[str] = []

    def record_report(_settings: Settings, _s3: Any, incident_id: str) -> str:
        reports.append(incident_id)
        return f"incidents/{incident_id}/report.html"

    monkeypatch.setattr(finalize, "report_writer", lambda: record_report)
    # The time-stamping authority answers in-process instead of over HTTP at TSA_URL.
    monkeypatch.setattr(chain, "HttpTimeStamper", lambda url: LocalTimeStamper(authority) if url == TSA_URL else None)
    handler_env(settings)
    assert settings.bus_dir is not None
    yield Harness(settings, store, lambdas, step_functions, FileBus(settings.bus_dir), monkeypatch, reports)
