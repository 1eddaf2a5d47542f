"""Secrets: from the environment or a file locally, from Secrets Manager in AWS. Values are never logged."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import boto3

from freezeframe.config import Settings
from freezeframe.errors import ConfigError


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


@lru_cache(maxsize=8)
def _secret_value(arn: str, region: str) -> str:
    value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn).get("SecretString")
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
