"""Every setting freezeframe reads, as env-var names in one place and one frozen Settings object.

Nothing else in the code reads os.environ: call `settings()` (built once) or `Settings.from_env(env)` in tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from freezeframe.contracts.errors import ConfigError

# Names of the environment variables (the only place they are spelled out).
ENV_CLUSTER = "FREEZEFRAME_CLUSTER"
ENV_RAW_BUCKET = "FREEZEFRAME_RAW_BUCKET"
ENV_EVIDENCE_BUCKET = "FREEZEFRAME_EVIDENCE_BUCKET"
ENV_S3_ENDPOINT = "FREEZEFRAME_S3_ENDPOINT"
ENV_LAMBDA_ENDPOINT = "FREEZEFRAME_LAMBDA_ENDPOINT"
ENV_REGION = "AWS_REGION"
ENV_KAFKA_BOOTSTRAP = "FREEZEFRAME_KAFKA_BOOTSTRAP"
ENV_BUS_DIR = "FREEZEFRAME_BUS_DIR"
ENV_SEGMENTS_TOPIC = "FREEZEFRAME_SEGMENTS_TOPIC"
ENV_LOCK_MODE = "FREEZEFRAME_LOCK_MODE"
ENV_LOCK_RETAIN_DAYS = "FREEZEFRAME_LOCK_RETAIN_DAYS"
ENV_LOOKBACK_S = "FREEZEFRAME_LOOKBACK_SECONDS"
ENV_LOOKAHEAD_S = "FREEZEFRAME_LOOKAHEAD_SECONDS"
ENV_FREEZE_FUNCTION = "FREEZEFRAME_FREEZE_FUNCTION"
ENV_DISSECT_FUNCTION = "FREEZEFRAME_DISSECT_FUNCTION"
ENV_DISSECT_STATE_MACHINE = "FREEZEFRAME_DISSECT_STATE_MACHINE"
ENV_ALERTMANAGER_TOKEN = "FREEZEFRAME_ALERTMANAGER_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_ALERTMANAGER_TOKEN_FILE = "FREEZEFRAME_ALERTMANAGER_TOKEN_FILE"  # noqa: S105
ENV_ALERTMANAGER_TOKEN_SECRET_ARN = "FREEZEFRAME_ALERTMANAGER_TOKEN_SECRET_ARN"  # noqa: S105
ENV_SEGMENT_SECONDS = "FREEZEFRAME_SEGMENT_SECONDS"
ENV_NODE_NAME = "NODE_NAME"
ENV_DISSECT_ENGINE = "FREEZEFRAME_DISSECT_ENGINE"
DISSECT_ENGINES = ("auto", "native", "python")
ENV_SPOOL_DIR = "FREEZEFRAME_SPOOL_DIR"
ENV_STATE_DIR = "FREEZEFRAME_STATE_DIR"
ENV_FUNCTIONS_DIR = "FREEZEFRAME_FUNCTIONS_DIR"
ENV_CACHE_DIR = "FREEZEFRAME_CACHE_DIR"
ENV_HOLD_GRACE_S = "FREEZEFRAME_HOLD_GRACE_SECONDS"
ENV_CONSOLIDATE = "FREEZEFRAME_CONSOLIDATE"
ENV_GLUE_DATABASE = "FREEZEFRAME_GLUE_DATABASE"
ENV_ATHENA_WORKGROUP = "FREEZEFRAME_ATHENA_WORKGROUP"
ENV_SPOOL_MAX_BYTES = "FREEZEFRAME_SPOOL_MAX_BYTES"
ENV_AGENT_HTTP_PORT = "FREEZEFRAME_AGENT_HTTP_PORT"
ENV_FREEZE_RULES = "FREEZEFRAME_FREEZE_RULES"
ENV_FREEZE_RULES_FILE = "FREEZEFRAME_FREEZE_RULES_FILE"
ENV_PAGERDUTY_SECRETS = "FREEZEFRAME_PAGERDUTY_SECRETS"  # noqa: S105 - comma-separated, for rotation
ENV_PAGERDUTY_SECRETS_FILE = "FREEZEFRAME_PAGERDUTY_SECRETS_FILE"  # noqa: S105 - one per line
ENV_PAGERDUTY_SECRET_ARN = "FREEZEFRAME_PAGERDUTY_SECRET_ARN"  # noqa: S105
ENV_API_TOKEN = "FREEZEFRAME_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_API_TOKEN_FILE = "FREEZEFRAME_API_TOKEN_FILE"  # noqa: S105
ENV_API_TOKEN_SECRET_ARN = "FREEZEFRAME_API_TOKEN_SECRET_ARN"  # noqa: S105
ENV_SEGMENT_MAX_BYTES = "FREEZEFRAME_SEGMENT_MAX_BYTES"
ENV_CAPTURE_BUFFER_KIB = "FREEZEFRAME_CAPTURE_BUFFER_KIB"
ENV_SNAPLEN = "FREEZEFRAME_SNAPLEN"
ENV_INTERFACES = "FREEZEFRAME_INTERFACES"
ENV_CAPTURE_FILTER = "FREEZEFRAME_CAPTURE_FILTER"
ENV_CAPTURE_ENGINE = "FREEZEFRAME_CAPTURE_ENGINE"
CAPTURE_ENGINES = ("tcpdump", "scapy")
ENV_K8S_WATCH = "FREEZEFRAME_K8S_WATCH"
# record node network state beside the capture (freezeframe.freeze.node_state)
ENV_NODE_STATE = "FREEZEFRAME_NODE_STATE"
ENV_JOBS_FILE = "FREEZEFRAME_JOBS_FILE"
ENV_TRINO_JAVA_HOME = "FREEZEFRAME_TRINO_JAVA_HOME"  # a JDK >= 24 for Trino only (Kafka keeps the default Java)
ENV_TRINO_URL = "FREEZEFRAME_TRINO_URL"  # a running Trino for `query --engine trino` (else the stack's)
ENV_MAX_RETAIN_DAYS = "FREEZEFRAME_MAX_RETAIN_DAYS"
# Custody: the asymmetric KMS key that signs evidence documents, and the RFC 3161 time-stamping authority.
ENV_SIGNING_KEY_ID = "FREEZEFRAME_SIGNING_KEY_ID"
# A local ECDSA P-256 private key (PEM) instead of KMS: the embedded demo's own key (adapters.local_signer).
ENV_SIGNING_KEY_FILE = "FREEZEFRAME_SIGNING_KEY_FILE"
# The public half to check custody chains against where no signing key is configured (a demo directory's key).
ENV_SIGNING_PUBLIC_KEY_FILE = "FREEZEFRAME_SIGNING_PUBLIC_KEY_FILE"
ENV_KMS_ENDPOINT = "FREEZEFRAME_KMS_ENDPOINT"
ENV_TSA_URL = "FREEZEFRAME_TSA_URL"
ENV_TSA_CA_FILE = "FREEZEFRAME_TSA_CA_FILE"
ENV_CUSTODY_PURPOSE = "FREEZEFRAME_CUSTODY_PURPOSE"
# Kafka security (freezeframe.adapters.kafka_auth builds every Kafka client's options from these).
ENV_KAFKA_SECURITY_PROTOCOL = "FREEZEFRAME_KAFKA_SECURITY_PROTOCOL"
ENV_KAFKA_SASL_MECHANISM = "FREEZEFRAME_KAFKA_SASL_MECHANISM"
ENV_KAFKA_SASL_USERNAME = "FREEZEFRAME_KAFKA_SASL_USERNAME"
ENV_KAFKA_SASL_PASSWORD = "FREEZEFRAME_KAFKA_SASL_PASSWORD"  # noqa: S105 - the variable's name, not a secret
ENV_KAFKA_SASL_PASSWORD_FILE = "FREEZEFRAME_KAFKA_SASL_PASSWORD_FILE"  # noqa: S105
ENV_KAFKA_SASL_SECRET_ARN = "FREEZEFRAME_KAFKA_SASL_SECRET_ARN"  # noqa: S105 - {"username", "password"} (MSK SCRAM)
ENV_KAFKA_CA_FILE = "FREEZEFRAME_KAFKA_CA_FILE"
ENV_KAFKA_CERT_FILE = "FREEZEFRAME_KAFKA_CERT_FILE"
ENV_KAFKA_KEY_FILE = "FREEZEFRAME_KAFKA_KEY_FILE"
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM")
# PagerDuty post-back (notes on the PagerDuty incident from the freeze and finalize steps).
ENV_PAGERDUTY_API_TOKEN = "FREEZEFRAME_PAGERDUTY_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_PAGERDUTY_API_TOKEN_FILE = "FREEZEFRAME_PAGERDUTY_API_TOKEN_FILE"  # noqa: S105
ENV_PAGERDUTY_API_TOKEN_SECRET_ARN = "FREEZEFRAME_PAGERDUTY_API_TOKEN_SECRET_ARN"  # noqa: S105
ENV_PAGERDUTY_API_URL = "FREEZEFRAME_PAGERDUTY_API_URL"
ENV_PAGERDUTY_FROM = "FREEZEFRAME_PAGERDUTY_FROM"
PAGERDUTY_API_URL = "https://api.pagerduty.com"
# The agent leaves its own Kafka and S3 traffic out of the capture (freezeframe.capture.bpf.own_traffic_exclusion).
ENV_EXCLUDE_OWN_TRAFFIC = "FREEZEFRAME_EXCLUDE_OWN_TRAFFIC"
ENV_OWN_TRAFFIC_NETS = "FREEZEFRAME_OWN_TRAFFIC_NETS"  # CIDRs of S3 (the region's S3 prefix list), comma-separated
# Dissection follows the hold (issue 13): how often an open hold's new parts are dissected, how long after a hold
# closes the last pass waits for in-flight indexer batches, and the freeze's attempts before its terminal state.
ENV_DISSECT_REFRESH_S = "FREEZEFRAME_DISSECT_REFRESH_SECONDS"
ENV_HOLD_SETTLE_S = "FREEZEFRAME_HOLD_SETTLE_SECONDS"
ENV_FREEZE_ATTEMPTS = "FREEZEFRAME_FREEZE_ATTEMPTS"
# Dissection in (node, time chunk) tasks (issue 17, freezeframe.dissect.plan): a fixed chunk length (0: sized by the
# planner from the manifest's packet counts), and the TCP warm-up each chunk replays before its start.
ENV_DISSECT_CHUNK_S = "FREEZEFRAME_DISSECT_CHUNK_SECONDS"
ENV_DISSECT_WARMUP_S = "FREEZEFRAME_DISSECT_WARMUP_SECONDS"
# The views' fold in hash buckets of endpoint pairs (freezeframe.dissect.foldshard): input rows per fold task.
ENV_FOLD_ROWS = "FREEZEFRAME_FOLD_ROWS"
# The agent's /healthz: the drop share of recent segments above which it is degraded.
ENV_HEALTH_DROP_RATIO = "FREEZEFRAME_HEALTH_DROP_RATIO"
ENV_S3_MAX_ATTEMPTS = "FREEZEFRAME_S3_MAX_ATTEMPTS"
ENV_S3_CONNECT_TIMEOUT_S = "FREEZEFRAME_S3_CONNECT_TIMEOUT_SECONDS"
# Local tooling: where pyenv keeps its Pythons (LocalStack runs on a pyenv 3.13 when PATH has none).
ENV_PYENV_ROOT = "PYENV_ROOT"

SEGMENTS_TOPIC = "freezeframe.segments"
K8S_TOPIC = "freezeframe.k8s"
JOBS_TOPIC = "freezeframe.jobs"  # recording jobs' segment records (their seq runs per job)
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
# S3 Object Lock caps a bucket's default retention at 100 years; no freezeframe lock may ask for more.
MAX_RETAIN_DAYS_LIMIT = 36500


@dataclass(frozen=True, slots=True)
class Settings:
    cluster: str = "demo"
    raw_bucket: str = "freezeframe-raw"
    evidence_bucket: str = "freezeframe-evidence"
    s3_endpoint: str | None = None
    lambda_endpoint: str | None = None
    region: str = "us-east-1"
    kafka_bootstrap: str | None = None
    bus_dir: Path | None = None
    segments_topic: str = SEGMENTS_TOPIC
    lock_mode: str = "COMPLIANCE"
    lock_retain_days: int = 30
    lookback_s: int = 15 * 60
    lookahead_s: int = 5 * 60
    freeze_function: str = "freezeframe-freeze"
    dissect_function: str = "freezeframe-dissect"
    dissect_state_machine: str | None = None  # AWS: the freeze starts this (Map over nodes, then finalize)
    alertmanager_token_env: str | None = None
    alertmanager_token_file: Path | None = None
    alertmanager_token_secret_arn: str | None = None
    segment_seconds: float = 10.0
    node_name: str = "local-node"
    spool_dir: Path = Path(".freezeframe/spool")
    state_dir: Path = Path(".freezeframe")
    functions_dir: Path | None = None
    spool_max_bytes: int = 1 << 30  # the agent's spool cap; the oldest un-uploaded segments are evicted beyond it
    agent_http_port: int = 9808  # the agent's /healthz and /metrics; 0 picks a free port
    freeze_rules: str | None = None
    hold_grace_s: int = 600
    consolidate: bool = False
    glue_database: str | None = None
    athena_workgroup: str | None = None  # for `query --athena`: the stack output AthenaWorkGroupName
    freeze_rules_file: Path | None = None
    api_token_env: str | None = None
    pagerduty_secrets_env: str | None = None
    pagerduty_secrets_file: Path | None = None
    pagerduty_secret_arn: str | None = None
    api_token_file: Path | None = None
    api_token_secret_arn: str | None = None
    segment_max_bytes: int = 64 << 20  # a segment is cut early when its pcap would grow past this
    capture_buffer_kib: int = 8192  # tcpdump -B: the kernel buffer per capture engine
    snaplen: int = 262_144
    interfaces: tuple[str, ...] = ("any",)  # comma-separated in the env; "any" is Linux cooked capture of all
    capture_filter: str = ""  # BPF of the always-on capture
    capture_engine: str = "tcpdump"  # tcpdump (libpcap, the default) | scapy (in-process, low-rate fallback)
    k8s_watch: bool = False  # the DaemonSet turns it on; outside a cluster there is no API server
    node_state: bool = True  # a live capture records the node's counters, routes, MTUs and ruleset every period
    jobs_file: Path | None = None  # recording jobs (YAML), re-read when its mtime changes
    trino_java_home: Path | None = None  # JDK for Trino; else the newest JDK >= 24 found
    trino_url: str | None = None  # http://127.0.0.1:PORT of a running Trino
    # The longest lock a request may ask for (the manual freeze's lock.retain_days / retain_until, freeze rules,
    # the default). A COMPLIANCE lock cannot be shortened by anyone, so an unbounded request could lock evidence
    # (and its storage bill) until 9999.
    max_retain_days: int = 3650
    signing_key_id: str | None = None  # KMS key (ECC_NIST_P256, SIGN_VERIFY) id, ARN or alias; None: unsigned
    signing_key_file: Path | None = None  # a local P-256 private key (the demo's); used when no KMS key is set
    signing_public_key_file: Path | None = None  # PEM public key to trust when neither key above is configured
    kms_endpoint: str | None = None  # a local KMS (LocalStack); None: the region's KMS
    tsa_url: str | None = None  # RFC 3161 time-stamping authority the signing functions ask for tokens
    tsa_ca_file: Path | None = None  # PEM roots a token's TSA certificate must chain to
    custody_purpose: str | None = None  # the purpose or ticket recorded in custody entries of this process
    kafka_security_protocol: str | None = None  # None: SASL_SSL with a SASL mechanism, else PLAINTEXT
    kafka_sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | AWS_MSK_IAM (OAUTHBEARER)
    kafka_sasl_username: str | None = None
    kafka_sasl_password_env: str | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_sasl_secret_arn: str | None = None
    kafka_ca_file: Path | None = None  # PEM bundle that signs the brokers' certificates (None: the system's)
    kafka_cert_file: Path | None = None  # PEM client certificate for mutual TLS
    kafka_key_file: Path | None = None
    pagerduty_api_token_env: str | None = None
    pagerduty_api_token_file: Path | None = None
    pagerduty_api_token_secret_arn: str | None = None
    pagerduty_api_url: str = PAGERDUTY_API_URL
    pagerduty_from: str | None = None  # the PagerDuty user's e-mail that notes are written as (the From header)
    exclude_own_traffic: bool = True  # capture filters leave out the agent's own Kafka and S3 connections
    own_traffic_nets: tuple[str, ...] = ()  # S3's CIDRs (VPC endpoint prefix list) on 443, left out of captures
    dissect_refresh_s: int = 60  # while a hold is open, its new parts are dissected at most this often
    hold_settle_s: int = 30  # the last pass starts this long after the hold closed (in-flight indexer batches)
    freeze_attempts: int = 3  # Lambda's async invocation: the first try and two retries
    dissect_chunk_s: int = 0  # fixed dissection chunk length; 0: the planner sizes chunks (dissect.plan)
    dissect_warmup_s: int = 10  # packets replayed before a chunk's start to rebuild TCP state (dissect.plan)
    fold_rows: int = 0  # input rows per task of the views' sharded fold; 0: dissect.foldshard.FOLD_ROWS
    health_drop_ratio: float = 0.01  # kernel + agent drops over captured + dropped packets of recent segments
    # The S3 client's tries of a request (adaptive retries) and its connect timeout. Functions and the agent ride out
    # throttling and brief outages with 8; the CLI sets 3 tries and 10 s (`INTERACTIVE_S3`) where unset.
    s3_max_attempts: int = 8
    s3_connect_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.lock_mode not in LOCK_MODES:
            raise ConfigError(f"{ENV_LOCK_MODE} must be one of {LOCK_MODES}, got {self.lock_mode!r}")
        if self.lock_retain_days < 1:
            raise ConfigError(f"{ENV_LOCK_RETAIN_DAYS} must be at least 1 day, got {self.lock_retain_days}")
        if not 1 <= self.max_retain_days <= MAX_RETAIN_DAYS_LIMIT:
            raise ConfigError(f"{ENV_MAX_RETAIN_DAYS} must be within 1..{MAX_RETAIN_DAYS_LIMIT}, "
                              f"got {self.max_retain_days}")
        if self.lock_retain_days > self.max_retain_days:
            raise ConfigError(f"{ENV_LOCK_RETAIN_DAYS} ({self.lock_retain_days}) is over "
                              f"{ENV_MAX_RETAIN_DAYS} ({self.max_retain_days})")
        if self.segment_seconds <= 0:
            raise ConfigError(f"{ENV_SEGMENT_SECONDS} must be positive, got {self.segment_seconds}")
        if self.spool_max_bytes < 1:
            raise ConfigError(f"{ENV_SPOOL_MAX_BYTES} must be positive, got {self.spool_max_bytes}")
        if self.segment_max_bytes < 1024:
            raise ConfigError(f"{ENV_SEGMENT_MAX_BYTES} must be at least 1024, got {self.segment_max_bytes}")
        if self.capture_buffer_kib < 1:
            raise ConfigError(f"{ENV_CAPTURE_BUFFER_KIB} must be positive, got {self.capture_buffer_kib}")
        if not 1 <= self.snaplen <= 262_144:
            raise ConfigError(f"{ENV_SNAPLEN} must be within 1..262144, got {self.snaplen}")
        if not self.interfaces:
            raise ConfigError(f"{ENV_INTERFACES} must name at least one interface (or 'any')")
        if self.capture_engine not in CAPTURE_ENGINES:
            raise ConfigError(f"{ENV_CAPTURE_ENGINE} must be one of {CAPTURE_ENGINES}, got {self.capture_engine!r}")
        if not 0 <= self.agent_http_port <= 65535:
            raise ConfigError(f"{ENV_AGENT_HTTP_PORT} must be a port number, got {self.agent_http_port}")
        if self.dissect_chunk_s < 0 or self.dissect_warmup_s < 0:
            raise ConfigError(f"{ENV_DISSECT_CHUNK_S} and {ENV_DISSECT_WARMUP_S} must not be negative")
        if self.fold_rows < 0:
            raise ConfigError(f"{ENV_FOLD_ROWS} must not be negative, got {self.fold_rows}")
        self._check_kafka_security()

    def _check_kafka_security(self) -> None:
        protocol, mechanism = self.kafka_security_protocol, self.kafka_sasl_mechanism
        if protocol is not None and protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ConfigError(f"{ENV_KAFKA_SECURITY_PROTOCOL} must be one of {KAFKA_SECURITY_PROTOCOLS}, "
                              f"got {protocol!r}")
        if mechanism is not None and mechanism not in KAFKA_SASL_MECHANISMS:
            raise ConfigError(f"{ENV_KAFKA_SASL_MECHANISM} must be one of {KAFKA_SASL_MECHANISMS}, got {mechanism!r}")
        if mechanism is not None and protocol in ("PLAINTEXT", "SSL"):
            raise ConfigError(f"{ENV_KAFKA_SASL_MECHANISM}={mechanism} needs {ENV_KAFKA_SECURITY_PROTOCOL} "
                              f"SASL_SSL (or SASL_PLAINTEXT), not {protocol}")
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL") and mechanism is None:
            raise ConfigError(f"{ENV_KAFKA_SECURITY_PROTOCOL}={protocol} needs {ENV_KAFKA_SASL_MECHANISM}")
        if mechanism == "AWS_MSK_IAM" and protocol == "SASL_PLAINTEXT":
            raise ConfigError("MSK IAM authentication runs over TLS only: use SASL_SSL")
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ConfigError(f"mutual TLS needs both {ENV_KAFKA_CERT_FILE} and {ENV_KAFKA_KEY_FILE}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        base = cls()
        return cls(
            cluster=env.get(ENV_CLUSTER, base.cluster),
            raw_bucket=env.get(ENV_RAW_BUCKET, base.raw_bucket),
            evidence_bucket=env.get(ENV_EVIDENCE_BUCKET, base.evidence_bucket),
            s3_endpoint=env.get(ENV_S3_ENDPOINT) or None,
            lambda_endpoint=env.get(ENV_LAMBDA_ENDPOINT) or None,
            region=env.get(ENV_REGION) or env.get("AWS_DEFAULT_REGION") or base.region,
            kafka_bootstrap=env.get(ENV_KAFKA_BOOTSTRAP) or None,
            bus_dir=Path(env[ENV_BUS_DIR]) if env.get(ENV_BUS_DIR) else None,
            segments_topic=env.get(ENV_SEGMENTS_TOPIC, base.segments_topic),
            lock_mode=env.get(ENV_LOCK_MODE, base.lock_mode).upper(),
            lock_retain_days=_int(env, ENV_LOCK_RETAIN_DAYS, base.lock_retain_days),
            lookback_s=_int(env, ENV_LOOKBACK_S, base.lookback_s),
            lookahead_s=_int(env, ENV_LOOKAHEAD_S, base.lookahead_s),
            freeze_function=env.get(ENV_FREEZE_FUNCTION, base.freeze_function),
            dissect_function=env.get(ENV_DISSECT_FUNCTION, base.dissect_function),
            dissect_state_machine=env.get(ENV_DISSECT_STATE_MACHINE) or None,
            alertmanager_token_env=env.get(ENV_ALERTMANAGER_TOKEN) or None,
            alertmanager_token_file=Path(env[ENV_ALERTMANAGER_TOKEN_FILE])
            if env.get(ENV_ALERTMANAGER_TOKEN_FILE) else None,
            alertmanager_token_secret_arn=env.get(ENV_ALERTMANAGER_TOKEN_SECRET_ARN) or None,
            segment_seconds=_float(env, ENV_SEGMENT_SECONDS, base.segment_seconds),
            node_name=env.get(ENV_NODE_NAME, base.node_name),
            spool_dir=Path(env.get(ENV_SPOOL_DIR, str(base.spool_dir))),
            state_dir=Path(env.get(ENV_STATE_DIR, str(base.state_dir))),
            functions_dir=Path(env[ENV_FUNCTIONS_DIR]) if env.get(ENV_FUNCTIONS_DIR) else None,
            spool_max_bytes=_int(env, ENV_SPOOL_MAX_BYTES, base.spool_max_bytes),
            agent_http_port=_int(env, ENV_AGENT_HTTP_PORT, base.agent_http_port),
            freeze_rules=env.get(ENV_FREEZE_RULES) or None,
            hold_grace_s=_int(env, ENV_HOLD_GRACE_S, base.hold_grace_s),
            consolidate=env.get(ENV_CONSOLIDATE, "").lower() in ("1", "true", "yes"),
            glue_database=env.get(ENV_GLUE_DATABASE) or None,
            athena_workgroup=env.get(ENV_ATHENA_WORKGROUP) or None,
            freeze_rules_file=Path(env[ENV_FREEZE_RULES_FILE]) if env.get(ENV_FREEZE_RULES_FILE) else None,
            api_token_env=env.get(ENV_API_TOKEN) or None,
            pagerduty_secrets_env=env.get(ENV_PAGERDUTY_SECRETS) or None,
            pagerduty_secrets_file=_path(env, ENV_PAGERDUTY_SECRETS_FILE),
            pagerduty_secret_arn=env.get(ENV_PAGERDUTY_SECRET_ARN) or None,
            api_token_file=Path(env[ENV_API_TOKEN_FILE]) if env.get(ENV_API_TOKEN_FILE) else None,
            api_token_secret_arn=env.get(ENV_API_TOKEN_SECRET_ARN) or None,
            segment_max_bytes=_int(env, ENV_SEGMENT_MAX_BYTES, base.segment_max_bytes),
            capture_buffer_kib=_int(env, ENV_CAPTURE_BUFFER_KIB, base.capture_buffer_kib),
            snaplen=_int(env, ENV_SNAPLEN, base.snaplen),
            interfaces=tuple(name.strip() for name in env[ENV_INTERFACES].split(",") if name.strip())
            if env.get(ENV_INTERFACES) else base.interfaces,
            capture_filter=env.get(ENV_CAPTURE_FILTER, base.capture_filter),
            capture_engine=env.get(ENV_CAPTURE_ENGINE, base.capture_engine),
            k8s_watch=env.get(ENV_K8S_WATCH, "").lower() in ("1", "true", "yes"),
            node_state=env.get(ENV_NODE_STATE, "true").lower() not in ("0", "false", "no"),
            jobs_file=_path(env, ENV_JOBS_FILE),
            trino_java_home=_path(env, ENV_TRINO_JAVA_HOME),
            trino_url=env.get(ENV_TRINO_URL) or None,
            max_retain_days=_int(env, ENV_MAX_RETAIN_DAYS, base.max_retain_days),
            signing_key_id=env.get(ENV_SIGNING_KEY_ID) or None,
            signing_key_file=_path(env, ENV_SIGNING_KEY_FILE),
            signing_public_key_file=_path(env, ENV_SIGNING_PUBLIC_KEY_FILE),
            kms_endpoint=env.get(ENV_KMS_ENDPOINT) or None,
            tsa_url=env.get(ENV_TSA_URL) or None,
            tsa_ca_file=_path(env, ENV_TSA_CA_FILE),
            custody_purpose=env.get(ENV_CUSTODY_PURPOSE) or None,
            kafka_security_protocol=env.get(ENV_KAFKA_SECURITY_PROTOCOL, "").upper() or None,
            kafka_sasl_mechanism=env.get(ENV_KAFKA_SASL_MECHANISM, "").upper() or None,
            kafka_sasl_username=env.get(ENV_KAFKA_SASL_USERNAME) or None,
            kafka_sasl_password_env=env.get(ENV_KAFKA_SASL_PASSWORD) or None,
            kafka_sasl_password_file=_path(env, ENV_KAFKA_SASL_PASSWORD_FILE),
            kafka_sasl_secret_arn=env.get(ENV_KAFKA_SASL_SECRET_ARN) or None,
            kafka_ca_file=_path(env, ENV_KAFKA_CA_FILE),
            kafka_cert_file=_path(env, ENV_KAFKA_CERT_FILE),
            kafka_key_file=_path(env, ENV_KAFKA_KEY_FILE),
            pagerduty_api_token_env=env.get(ENV_PAGERDUTY_API_TOKEN) or None,
            pagerduty_api_token_file=_path(env, ENV_PAGERDUTY_API_TOKEN_FILE),
            pagerduty_api_token_secret_arn=env.get(ENV_PAGERDUTY_API_TOKEN_SECRET_ARN) or None,
            pagerduty_api_url=(env.get(ENV_PAGERDUTY_API_URL) or base.pagerduty_api_url).rstrip("/"),
            pagerduty_from=env.get(ENV_PAGERDUTY_FROM) or None,
            exclude_own_traffic=env.get(ENV_EXCLUDE_OWN_TRAFFIC, "true").lower() not in ("0", "false", "no"),
            own_traffic_nets=tuple(n.strip() for n in env.get(ENV_OWN_TRAFFIC_NETS, "").split(",") if n.strip()),
            dissect_refresh_s=_int(env, ENV_DISSECT_REFRESH_S, base.dissect_refresh_s),
            hold_settle_s=_int(env, ENV_HOLD_SETTLE_S, base.hold_settle_s),
            freeze_attempts=_int(env, ENV_FREEZE_ATTEMPTS, base.freeze_attempts),
            dissect_chunk_s=_int(env, ENV_DISSECT_CHUNK_S, base.dissect_chunk_s),
            dissect_warmup_s=_int(env, ENV_DISSECT_WARMUP_S, base.dissect_warmup_s),
            fold_rows=_int(env, ENV_FOLD_ROWS, base.fold_rows),
            health_drop_ratio=_float(env, ENV_HEALTH_DROP_RATIO, base.health_drop_ratio),
            s3_max_attempts=_int(env, ENV_S3_MAX_ATTEMPTS, base.s3_max_attempts),
            s3_connect_timeout_s=_float(env, ENV_S3_CONNECT_TIMEOUT_S, base.s3_connect_timeout_s),
        )

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        # The token itself must never reach a log line through a repr.
        token = "<set>" if self.alertmanager_token_env else None  # api_token_env is left out entirely
        return f"Settings(cluster={self.cluster!r}, raw_bucket={self.raw_bucket!r}, " \
               f"evidence_bucket={self.evidence_bucket!r}, s3_endpoint={self.s3_endpoint!r}, " \
               f"kafka_bootstrap={self.kafka_bootstrap!r}, alertmanager_token={token})"


def env_overrides(settings_: Settings) -> dict[str, str]:
    """The env vars that reproduce `settings_` in a child process or a local Lambda invocation."""
    out = {
        ENV_CLUSTER: settings_.cluster,
        ENV_RAW_BUCKET: settings_.raw_bucket,
        ENV_EVIDENCE_BUCKET: settings_.evidence_bucket,
        ENV_REGION: settings_.region,
        ENV_SEGMENTS_TOPIC: settings_.segments_topic,
        ENV_LOCK_MODE: settings_.lock_mode,
        ENV_LOCK_RETAIN_DAYS: str(settings_.lock_retain_days),
        ENV_LOOKBACK_S: str(settings_.lookback_s),
        ENV_LOOKAHEAD_S: str(settings_.lookahead_s),
        ENV_FREEZE_FUNCTION: settings_.freeze_function,
        ENV_DISSECT_FUNCTION: settings_.dissect_function,
        ENV_SEGMENT_SECONDS: str(settings_.segment_seconds),
        ENV_NODE_NAME: settings_.node_name,
        ENV_SPOOL_DIR: str(settings_.spool_dir),
        ENV_STATE_DIR: str(settings_.state_dir),
        ENV_SPOOL_MAX_BYTES: str(settings_.spool_max_bytes),
        ENV_AGENT_HTTP_PORT: str(settings_.agent_http_port),
        ENV_SEGMENT_MAX_BYTES: str(settings_.segment_max_bytes),
        ENV_CAPTURE_BUFFER_KIB: str(settings_.capture_buffer_kib),
        ENV_SNAPLEN: str(settings_.snaplen),
        ENV_INTERFACES: ",".join(settings_.interfaces),
        ENV_K8S_WATCH: "true" if settings_.k8s_watch else "false",
        ENV_NODE_STATE: "true" if settings_.node_state else "false",
        ENV_MAX_RETAIN_DAYS: str(settings_.max_retain_days),
    }
    optional = {
        ENV_S3_ENDPOINT: settings_.s3_endpoint,
        ENV_LAMBDA_ENDPOINT: settings_.lambda_endpoint,
        ENV_DISSECT_STATE_MACHINE: settings_.dissect_state_machine,
        ENV_KAFKA_BOOTSTRAP: settings_.kafka_bootstrap,
        ENV_BUS_DIR: str(settings_.bus_dir) if settings_.bus_dir else None,
        ENV_ALERTMANAGER_TOKEN: settings_.alertmanager_token_env,
        ENV_ALERTMANAGER_TOKEN_FILE: str(settings_.alertmanager_token_file)
        if settings_.alertmanager_token_file else None,
        ENV_ALERTMANAGER_TOKEN_SECRET_ARN: settings_.alertmanager_token_secret_arn,
        ENV_FUNCTIONS_DIR: str(settings_.functions_dir) if settings_.functions_dir else None,
        ENV_FREEZE_RULES: settings_.freeze_rules,
        ENV_HOLD_GRACE_S: str(settings_.hold_grace_s),
        ENV_CONSOLIDATE: "true" if settings_.consolidate else "false",
        ENV_GLUE_DATABASE: settings_.glue_database,
        ENV_ATHENA_WORKGROUP: settings_.athena_workgroup,
        ENV_FREEZE_RULES_FILE: str(settings_.freeze_rules_file) if settings_.freeze_rules_file else None,
        ENV_API_TOKEN: settings_.api_token_env,
        ENV_PAGERDUTY_SECRETS: settings_.pagerduty_secrets_env,
        ENV_PAGERDUTY_SECRETS_FILE: str(settings_.pagerduty_secrets_file) if settings_.pagerduty_secrets_file else None,
        ENV_PAGERDUTY_SECRET_ARN: settings_.pagerduty_secret_arn,
        ENV_API_TOKEN_FILE: str(settings_.api_token_file) if settings_.api_token_file else None,
        ENV_API_TOKEN_SECRET_ARN: settings_.api_token_secret_arn,
        ENV_CAPTURE_FILTER: settings_.capture_filter,
        ENV_CAPTURE_ENGINE: settings_.capture_engine,
        ENV_JOBS_FILE: str(settings_.jobs_file) if settings_.jobs_file else None,
        ENV_TRINO_JAVA_HOME: str(settings_.trino_java_home) if settings_.trino_java_home else None,
        ENV_TRINO_URL: settings_.trino_url,
        ENV_SIGNING_KEY_ID: settings_.signing_key_id,
        ENV_SIGNING_KEY_FILE: str(settings_.signing_key_file) if settings_.signing_key_file else None,
        ENV_SIGNING_PUBLIC_KEY_FILE: str(settings_.signing_public_key_file)
        if settings_.signing_public_key_file else None,
        ENV_KMS_ENDPOINT: settings_.kms_endpoint,
        ENV_TSA_URL: settings_.tsa_url,
        ENV_TSA_CA_FILE: str(settings_.tsa_ca_file) if settings_.tsa_ca_file else None,
        ENV_KAFKA_SECURITY_PROTOCOL: settings_.kafka_security_protocol,
        ENV_KAFKA_SASL_MECHANISM: settings_.kafka_sasl_mechanism,
        ENV_KAFKA_SASL_USERNAME: settings_.kafka_sasl_username,
        ENV_KAFKA_SASL_PASSWORD: settings_.kafka_sasl_password_env,
        ENV_KAFKA_SASL_PASSWORD_FILE: _str(settings_.kafka_sasl_password_file),
        ENV_KAFKA_SASL_SECRET_ARN: settings_.kafka_sasl_secret_arn,
        ENV_KAFKA_CA_FILE: _str(settings_.kafka_ca_file),
        ENV_KAFKA_CERT_FILE: _str(settings_.kafka_cert_file),
        ENV_KAFKA_KEY_FILE: _str(settings_.kafka_key_file),
        ENV_PAGERDUTY_API_TOKEN: settings_.pagerduty_api_token_env,
        ENV_PAGERDUTY_API_TOKEN_FILE: _str(settings_.pagerduty_api_token_file),
        ENV_PAGERDUTY_API_TOKEN_SECRET_ARN: settings_.pagerduty_api_token_secret_arn,
        ENV_PAGERDUTY_API_URL: settings_.pagerduty_api_url if settings_.pagerduty_api_url != PAGERDUTY_API_URL
        else None,
        ENV_PAGERDUTY_FROM: settings_.pagerduty_from,
        ENV_EXCLUDE_OWN_TRAFFIC: None if settings_.exclude_own_traffic else "false",
        ENV_OWN_TRAFFIC_NETS: ",".join(settings_.own_traffic_nets) or None,
        ENV_DISSECT_REFRESH_S: str(settings_.dissect_refresh_s),
        ENV_HOLD_SETTLE_S: str(settings_.hold_settle_s),
        ENV_FREEZE_ATTEMPTS: str(settings_.freeze_attempts),
        ENV_DISSECT_CHUNK_S: str(settings_.dissect_chunk_s) if settings_.dissect_chunk_s else None,
        ENV_DISSECT_WARMUP_S: str(settings_.dissect_warmup_s),
        ENV_FOLD_ROWS: str(settings_.fold_rows) if settings_.fold_rows else None,
        ENV_HEALTH_DROP_RATIO: repr(settings_.health_drop_ratio),
        ENV_S3_MAX_ATTEMPTS: str(settings_.s3_max_attempts),
        ENV_S3_CONNECT_TIMEOUT_S: repr(settings_.s3_connect_timeout_s),
    }
    out.update({k: v for k, v in optional.items() if v})
    return out


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings.from_env(os.environ)


def cache_dir() -> Path:
    """Where downloaded tools live (Kafka jars, the LocalStack venv): never inside the repository."""
    configured = os.environ.get(ENV_CACHE_DIR)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "freezeframe"


def dissect_engine() -> str:
    """The dissection engine asked for: 'native' (the compiled core), 'python' (the reference engine) or 'auto'
    (the default: native when the extension imports, else python)."""
    value = os.environ.get(ENV_DISSECT_ENGINE, "").strip().lower() or "auto"
    if value not in DISSECT_ENGINES:
        raise ConfigError(f"{ENV_DISSECT_ENGINE} must be one of {', '.join(DISSECT_ENGINES)}, not {value!r}")
    return value


def pyenv_root_override() -> Path | None:
    """Local tooling: the pyenv root the environment names, if any."""
    configured = os.environ.get(ENV_PYENV_ROOT)
    return Path(configured).expanduser() if configured else None


def child_env(overrides: Mapping[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """Local tooling: the environment of a child process (the local stack's gateway, LocalStack): this process's,
    without `drop`, with `overrides`."""
    env = {name: value for name, value in os.environ.items() if name not in drop}
    env.update(overrides or {})
    return env


def export_env(overrides: Mapping[str, str], defaults: Mapping[str, str] | None = None) -> None:
    """Local tooling: set this process's environment for handlers run in-process (the demo), which read their
    settings from it exactly as in Lambda. `defaults` are set only where unset. The settings are re-read."""
    os.environ.update(overrides)
    for name, value in (defaults or {}).items():
        os.environ.setdefault(name, value)
    reset_settings_cache()


# freezeframe does no linear algebra, but pyarrow imports numpy, whose OpenBLAS starts a thread per core at import
# that spins waiting for work: 0.1 CPU-s a process on this 2-core machine, 4 % of a whole `freezeframe dissect` of
# 1.2 M packets (tests/bench/bench_native.py). One thread starts none. Set where unset, before numpy is imported.
NUMERIC_THREADS = {"OPENBLAS_NUM_THREADS": "1"}
# No transparent huge pages for the process. pyarrow's memory pool (its own mimalloc) advises huge pages for its
# arenas, and hands freed memory back to the system within milliseconds: the Parquet writer's transient buffers then
# fault in, and zero, a fresh 2 MB page again and again. 0.1-0.13 CPU-s, 7-9 % of a whole `freezeframe dissect` of
# 1.1 M packets here, for the same peak RSS (tests/bench/bench_native.py; THP in madvise mode, as Debian and Ubuntu
# ship it).
# mimalloc reads the option when it starts (pyarrow's at `import pyarrow`, the compiled core's at its import) and then
# disables THP for the whole process (prctl PR_SET_THP_DISABLE); the core's own mimalloc never advises huge pages.
ALLOCATOR_PAGES = {"MIMALLOC_ALLOW_THP": "0"}
PROCESS_DEFAULTS = {**NUMERIC_THREADS, **ALLOCATOR_PAGES}


# The CLI is used at a terminal: an S3 endpoint it cannot reach should fail in seconds, not after the functions'
# eight adaptive tries with back-off (35-60 s for a refused connection) and a 60 s connect timeout each. Set where
# unset, so a user's choice (or a script's) stands; the processes the CLI starts (the local gateway) inherit it.
INTERACTIVE_S3 = {ENV_S3_MAX_ATTEMPTS: "3", ENV_S3_CONNECT_TIMEOUT_S: "10"}


def interactive_s3() -> None:
    """The CLI: `INTERACTIVE_S3` where unset."""
    export_env({}, INTERACTIVE_S3)


def process_defaults() -> None:
    """Entry points: no BLAS thread pool and no huge pages for this process (`PROCESS_DEFAULTS`, where unset); call
    before numpy, pyarrow or the compiled core is imported."""
    export_env({}, PROCESS_DEFAULTS)


def forgo_numpy() -> None:
    """For a process whose code never uses numpy (a `freezeframe dissect` of local files on the compiled core): pyarrow
    runs without it. pyarrow imports numpy whenever it is installed, and numpy's import (OpenBLAS's libraries and its
    modules) cost 0.12-0.15 CPU-s a process here, a tenth of a whole dissection of 1.1 M packets
    (tests/bench/bench_native.py), and 11 MB of RSS. pyarrow without numpy is how finalize already runs in Lambda (its
    layers ship none). The reference engine's batched path (dissect.tcp.batch) and time chunking (files.time_span) use
    numpy: not for them. No effect once numpy is loaded; after the call, importing numpy raises ImportError."""
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]  # None marks a module that will not import


def reset_settings_cache() -> None:
    """For the local gateway and tests: re-read the environment on the next `settings()` call."""
    settings.cache_clear()


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _path(env: Mapping[str, str], name: str) -> Path | None:
    return Path(env[name]) if env.get(name) else None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
