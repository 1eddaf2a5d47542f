"""The security options of every Kafka client freezeframe builds (agent, event sources, CLI, local stack).

One function, `client_options(settings)`, turns the FREEZEFRAME_KAFKA_* settings into kafka-python keyword
arguments, so a producer, a consumer and an admin client all speak the same protocol:

- nothing: PLAINTEXT, no TLS and no authentication (the local stack);
- `SECURITY_PROTOCOL=SSL` (+ `CA_FILE`, and `CERT_FILE`/`KEY_FILE` for mutual TLS): TLS that verifies the
  broker's certificate and name;
- `SASL_MECHANISM=SCRAM-SHA-512` (or SCRAM-SHA-256, PLAIN) with a username and password (env, file or a Secrets
  Manager secret): SASL_SSL, TLS then SASL/SCRAM (MSK SCRAM, self-managed brokers);
- `SASL_MECHANISM=AWS_MSK_IAM`: SASL_SSL, TLS then SASL/OAUTHBEARER with a token signed by AWS's MSK IAM signer
  (`aws-msk-iam-sasl-signer-python`) from the default credential chain (IRSA in the DaemonSet).

The options hold the password and the token provider: never log them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from freezeframe.adapters.secrets import kafka_sasl_credentials
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

logger = logging.getLogger(__name__)
MSK_IAM = "AWS_MSK_IAM"
TOKEN_REFRESH_MARGIN_S = 60.0  # a token is replaced this long before it expires (MSK's tokens last 15 minutes)
TokenGenerator = Callable[[str], tuple[str, int]]  # region -> (token, expiry in epoch milliseconds)


def security_protocol(settings: Settings) -> str:
    """The protocol the settings ask for: explicit, else SASL_SSL when a SASL mechanism is set, else PLAINTEXT."""
    if settings.kafka_security_protocol:
        return settings.kafka_security_protocol
    return "SASL_SSL" if settings.kafka_sasl_mechanism else "PLAINTEXT"


def client_options(settings: Settings, *, token_generator: TokenGenerator | None = None) -> dict[str, Any]:
    """kafka-python keyword arguments for KafkaProducer, KafkaConsumer and KafkaAdminClient alike."""
    protocol = security_protocol(settings)
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        for name, path in (("ssl_cafile", settings.kafka_ca_file), ("ssl_certfile", settings.kafka_cert_file),
                           ("ssl_keyfile", settings.kafka_key_file)):
            if path is None:
                continue
            if not path.is_file():
                raise ConfigError(f"Kafka TLS file {path} ({name}) does not exist")
            options[name] = str(path)
    elif settings.kafka_ca_file or settings.kafka_cert_file:
        raise ConfigError(f"Kafka TLS files are set but the security protocol is {protocol}: use SSL or SASL_SSL")
    mechanism = settings.kafka_sasl_mechanism
    if mechanism == MSK_IAM:
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = msk_iam_token_provider(settings.region, token_generator)
    elif mechanism is not None:
        username, password = kafka_sasl_credentials(settings)
        options.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
    return options


def describe(settings: Settings) -> str:
    """What `client_options` will do, for logs and `freezeframe up`: no secret in it."""
    protocol = security_protocol(settings)
    parts = [protocol]
    if settings.kafka_sasl_mechanism:
        parts.append(settings.kafka_sasl_mechanism)
        if settings.kafka_sasl_username:
            parts.append(f"user {settings.kafka_sasl_username}")
    if settings.kafka_ca_file:
        parts.append(f"CA {settings.kafka_ca_file}")
    if settings.kafka_cert_file:
        parts.append("client certificate")
    return ", ".join(parts)


class MskIamTokenProvider:
    """SASL/OAUTHBEARER tokens for MSK IAM: a SigV4-presigned `kafka-cluster:Connect` request, made by AWS's signer.

    kafka-python asks for a token on every new connection; the provider reuses one until TOKEN_REFRESH_MARGIN_S
    before it expires, so reconnect storms do not sign (or fetch credentials) over and over.
    """

    def __init__(self, region: str, generate: TokenGenerator | None = None,
                 clock: Callable[[], float] = time.time, refresh_margin_s: float = TOKEN_REFRESH_MARGIN_S) -> None:
        if not region:
            raise ConfigError("MSK IAM authentication needs the cluster's region (AWS_REGION)")
        self.region = region
        self._generate = generate or _signer_token
        self._clock = clock
        self._margin_s = refresh_margin_s
        self._token: str | None = None
        self._expires_s = 0.0
        self._lock = threading.Lock()
        self.generated = 0

    def token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_s - self._margin_s:
                token, expiry_ms = self._generate(self.region)
                if not token:
                    raise ConfigError("the MSK IAM signer returned an empty token")
                self._token, self._expires_s = token, expiry_ms / 1000.0
                self.generated += 1
                logger.debug("MSK IAM token signed", extra={"region": self.region, "expires_s": self._expires_s})
            return self._token

    def extensions(self) -> dict[str, str]:
        return {}

    def __repr__(self) -> str:
        return f"MskIamTokenProvider(region={self.region!r})"


def msk_iam_token_provider(region: str, generate: TokenGenerator | None = None) -> MskIamTokenProvider:
    """A provider kafka-python accepts: it requires an instance of its AbstractTokenProvider, which this registers
    as a virtual base (so importing this module does not load the Kafka client)."""
    try:
        from kafka.net.sasl.oauth import AbstractTokenProvider  # kafka-python >= 3
    except ImportError:  # pragma: no cover - kafka-python 2.x
        from kafka.sasl.oauth import AbstractTokenProvider  # type: ignore[no-redef,unused-ignore]
    AbstractTokenProvider.register(MskIamTokenProvider)
    return MskIamTokenProvider(region, generate)


def _signer_token(region: str) -> tuple[str, int]:
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError as exc:  # pragma: no cover - a dependency of the project and of the agent image
        raise ConfigError("MSK IAM authentication needs aws-msk-iam-sasl-signer-python") from exc
    token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
    return str(token), int(expiry_ms)
