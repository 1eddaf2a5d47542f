"""Secrets: from the environment or a file locally, from Secrets Manager in AWS. Values are never logged.

`SecretStore` is the typed interface of Secrets Manager's one operation freezeframe uses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError


def alertmanager_token(settings: Settings) -> str:
    return _token("Alertmanager token", "FREEZEFRAME_ALERTMANAGER_TOKEN", settings.alertmanager_token_env,
                  settings.alertmanager_token_file, settings.alertmanager_token_secret_arn, settings.region)


def api_token(settings: Settings) -> str:
    """The token of the manual freeze and status API."""
    return _token("API token", "FREEZEFRAME_API_TOKEN", settings.api_token_env, settings.api_token_file,
                  settings.api_token_secret_arn, settings.region)


def _token(what: str, env_name: str, value: str | None, path: Path | None, arn: str | None, region: str) -> str:
    """The first configured of: the value itself (env), a file holding it, a Secrets Manager secret."""
    if value:
        return value
    if path:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} file {path}") from exc
        if token:
            return token
    if arn:
        return _secret_value(arn, region)
    raise ConfigError(f"no {what} configured: set {env_name}, {env_name}_FILE or {env_name}_SECRET_ARN")


class SecretStore(Protocol):
    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]: ...


def _secrets_client(region: str) -> SecretStore:
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import

    return cast(SecretStore, boto3.client("secretsmanager", region_name=region))


@lru_cache(maxsize=8)
def _secret_value(arn: str, region: str) -> str:
    value = _secrets_client(region).get_secret_value(SecretId=arn).get("SecretString")
    if not value:
        raise ConfigError(f"secret {arn} has no SecretString")
    return str(value).strip()


def pagerduty_secrets(settings: Settings) -> list[str]:
    """Every configured PagerDuty signing secret: during a rotation PagerDuty signs with each, so all must verify."""
    if settings.pagerduty_secrets_env:
        raw = settings.pagerduty_secrets_env.replace("\n", ",")
    elif settings.pagerduty_secrets_file:
        try:
            raw = settings.pagerduty_secrets_file.read_text(encoding="utf-8").replace("\n", ",")
        except OSError as exc:
            raise ConfigError(f"cannot read the PagerDuty secrets file {settings.pagerduty_secrets_file}") from exc
    elif settings.pagerduty_secret_arn:
        value = _secret_value(settings.pagerduty_secret_arn, settings.region)
        try:
            parsed = json.loads(value)
            raw = ",".join(parsed) if isinstance(parsed, list) else value
        except json.JSONDecodeError:
            raw = value
    else:
        raise ConfigError("no PagerDuty signing secret configured: set FREEZEFRAME_PAGERDUTY_SECRETS, "
                          "FREEZEFRAME_PAGERDUTY_SECRETS_FILE or FREEZEFRAME_PAGERDUTY_SECRET_ARN")
    secrets = [part.strip() for part in raw.split(",") if part.strip()]
    if not secrets:
        raise ConfigError("the configured PagerDuty secrets are empty")
    return secrets


def pagerduty_api_token(settings: Settings) -> str | None:
    """The PagerDuty REST API token of the post-back, or None when none is configured (the post-back is optional)."""
    if not (settings.pagerduty_api_token_env or settings.pagerduty_api_token_file
            or settings.pagerduty_api_token_secret_arn):
        return None
    return _token("PagerDuty API token", "FREEZEFRAME_PAGERDUTY_API_TOKEN", settings.pagerduty_api_token_env,
                  settings.pagerduty_api_token_file, settings.pagerduty_api_token_secret_arn, settings.region)


def kafka_sasl_credentials(settings: Settings) -> tuple[str, str]:
    """(username, password) for SASL/PLAIN or SCRAM: the password from the env, a file, or a Secrets Manager secret
    holding {"username": ..., "password": ...} (the shape MSK's SCRAM secrets have; its username wins)."""
    username = settings.kafka_sasl_username
    if settings.kafka_sasl_secret_arn and not (settings.kafka_sasl_password_env or settings.kafka_sasl_password_file):
        value = _secret_value(settings.kafka_sasl_secret_arn, settings.region)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"secret {settings.kafka_sasl_secret_arn} is not JSON with username and password"
                              ) from exc
        if not isinstance(parsed, dict) or not parsed.get("password"):
            raise ConfigError(f"secret {settings.kafka_sasl_secret_arn} has no password")
        username = str(parsed.get("username") or username or "")
        password = str(parsed["password"])
    elif not (settings.kafka_sasl_password_env or settings.kafka_sasl_password_file):
        raise ConfigError("no Kafka SASL password: set FREEZEFRAME_KAFKA_SASL_PASSWORD, "
                          "FREEZEFRAME_KAFKA_SASL_PASSWORD_FILE or FREEZEFRAME_KAFKA_SASL_SECRET_ARN")
    else:
        password = _token("Kafka SASL password", "FREEZEFRAME_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password_env,
                          settings.kafka_sasl_password_file, None, settings.region)
    if not username:
        raise ConfigError("no Kafka SASL username: set FREEZEFRAME_KAFKA_SASL_USERNAME (or the secret's username)")
    return username, password
