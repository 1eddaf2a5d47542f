"""Secrets: from the environment or a file locally, from Secrets Manager in AWS. Values are never logged."""

from __future__ import annotations

from functools import lru_cache

import boto3

from freezeframe.config import Settings
from freezeframe.errors import ConfigError


def alertmanager_token(settings: Settings) -> str:
    if settings.alertmanager_token_env:
        return settings.alertmanager_token_env
    if settings.alertmanager_token_file:
        try:
            token = settings.alertmanager_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the Alertmanager token file {settings.alertmanager_token_file}") from exc
        if token:
            return token
    if settings.alertmanager_token_secret_arn:
        return _secret_value(settings.alertmanager_token_secret_arn, settings.region)
    raise ConfigError("no Alertmanager token configured: set FREEZEFRAME_ALERTMANAGER_TOKEN, "
                      "FREEZEFRAME_ALERTMANAGER_TOKEN_FILE or FREEZEFRAME_ALERTMANAGER_TOKEN_SECRET_ARN")


@lru_cache(maxsize=8)
def _secret_value(arn: str, region: str) -> str:
    value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn).get("SecretString")
    if not value:
        raise ConfigError(f"secret {arn} has no SecretString")
    return str(value).strip()
