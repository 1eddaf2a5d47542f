"""Kafka client security options from settings, and the MSK IAM (SASL/OAUTHBEARER) token provider.

MSK's IAM validation cannot run locally, so the token is checked against the SigV4 query-signing algorithm as AWS
documents it, recomputed here with hmac/hashlib from the same credentials.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from kafka.net.sasl.oauth import SaslMechanismOAuth

from freezeframe.adapters.kafka_auth import MskIamTokenProvider, client_options, describe, msk_iam_token_provider
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

ACCESS_KEY, SECRET_KEY = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_default_is_plaintext_without_options() -> None:
    assert client_options(Settings()) == {"security_protocol": "PLAINTEXT"}


def test_tls_with_ca_and_client_certificate(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("x", encoding="utf-8")
    options = client_options(Settings(kafka_security_protocol="SSL", kafka_ca_file=ca, kafka_cert_file=cert,
                                      kafka_key_file=key))
    assert options == {"security_protocol": "SSL", "ssl_cafile": str(ca), "ssl_certfile": str(cert),
                       "ssl_keyfile": str(key)}


def test_scram_implies_sasl_ssl_and_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = Settings.from_env({"FREEZEFRAME_KAFKA_SASL_MECHANISM": "scram-sha-512",
                                "FREEZEFRAME_KAFKA_SASL_USERNAME": "agent",
                                "FREEZEFRAME_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert client_options(config) == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                      "sasl_plain_username": "agent", "sasl_plain_password": "s3cret"}
    assert "s3cret" not in describe(config) and "s3cret" not in repr(config)


@pytest.mark.parametrize(("env", "message"), [
    ({"FREEZEFRAME_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of"),
    ({"FREEZEFRAME_KAFKA_SASL_MECHANISM": "GSSAPI"}, "must be one of"),
    ({"FREEZEFRAME_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "FREEZEFRAME_KAFKA_SECURITY_PROTOCOL": "SSL"},
     "needs FREEZEFRAME_KAFKA_SECURITY_PROTOCOL SASL_SSL"),
    ({"FREEZEFRAME_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs FREEZEFRAME_KAFKA_SASL_MECHANISM"),
    ({"FREEZEFRAME_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM", "FREEZEFRAME_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
     "TLS only"),
    ({"FREEZEFRAME_KAFKA_CERT_FILE": "/c.pem"}, "both"),
])
def test_inconsistent_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_scram_without_password_or_missing_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Kafka SASL password"):
        client_options(Settings(kafka_sasl_mechanism="SCRAM-SHA-256", kafka_sasl_username="u"))
    with pytest.raises(ConfigError, match="does not exist"):
        client_options(Settings(kafka_security_protocol="SSL", kafka_ca_file=tmp_path / "missing.pem"))


def test_iam_uses_oauthbearer_with_a_provider_kafka_python_accepts() -> None:
    options = client_options(Settings(kafka_sasl_mechanism="AWS_MSK_IAM", region="eu-west-1"),
                             token_generator=lambda region: (f"token-for-{region}", 10**13))
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "OAUTHBEARER"
    mechanism = SaslMechanismOAuth(sasl_oauth_token_provider=options["sasl_oauth_token_provider"])
    assert mechanism.auth_bytes() == b"n,,\x01auth=Bearer token-for-eu-west-1\x01\x01"


def test_token_is_reused_until_shortly_before_expiry() -> None:
    now = [1_000.0]
    calls: list[str] = []

    def generate(region: str) -> tuple[str, int]:
        calls.append(region)
        return f"t{len(calls)}", int((now[0] + 900) * 1000)  # MSK tokens last 15 minutes

    provider = MskIamTokenProvider("us-east-1", generate, clock=lambda: now[0], refresh_margin_s=60)
    assert [provider.token() for _ in range(5)] == ["t1"] * 5
    now[0] += 839
    assert provider.token() == "t1"
    now[0] += 2  # within the margin: re-signed
    assert provider.token() == "t2" and len(calls) == 2
    assert "t2" not in repr(provider)


def _sigv4_signature(query: dict[str, str], host: str, region: str) -> str:
    """AWS SigV4 query signing (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html); the
    signer appends User-Agent after signing, as MSK expects."""
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                               for k, v in sorted(query.items()) if k not in ("X-Amz-Signature", "User-Agent"))
    canonical = "\n".join(["GET", "/", canonical_query, f"host:{host}", "", "host",
                           hashlib.sha256(b"").hexdigest()])
    date = query["X-Amz-Date"]
    scope = f"{date[:8]}/{region}/kafka-cluster/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{SECRET_KEY}".encode()
    for part in (date[:8], region, "kafka-cluster", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_signer_token_is_a_sigv4_presigned_kafka_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    token = msk_iam_token_provider("eu-central-1").token()
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    assert parts.netloc == "kafka.eu-central-1.amazonaws.com"
    assert query["Action"] == "kafka-cluster:Connect"
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Credential"].startswith(f"{ACCESS_KEY}/") and "/eu-central-1/kafka-cluster/" in \
        query["X-Amz-Credential"]
    assert query["X-Amz-Signature"] == _sigv4_signature(query, parts.netloc, "eu-central-1")
