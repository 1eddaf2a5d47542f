"""Asynchronous function invocation through the Lambda Invoke API (the local gateway speaks the same API)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from freezeframe.adapters.s3 import LOCAL_CREDENTIALS
from freezeframe.config import Settings
from freezeframe.errors import FreezeframeError


@lru_cache(maxsize=16)
def _client(settings: Settings) -> Any:
    kwargs: dict[str, Any] = {"region_name": settings.region,
                              "config": Config(retries={"max_attempts": 5, "mode": "standard"})}
    if settings.lambda_endpoint:
        kwargs["endpoint_url"] = settings.lambda_endpoint
        if boto3.session.Session().get_credentials() is None:
            kwargs.update(LOCAL_CREDENTIALS)
    return boto3.client("lambda", **kwargs)


def invoke_async(settings: Settings, function_name: str, payload: Mapping[str, Any]) -> None:
    reply = _client(settings).invoke(FunctionName=function_name, InvocationType="Event",
                                                    Payload=json.dumps(dict(payload)).encode())
    if reply.get("StatusCode") != 202:
        raise FreezeframeError(f"async invoke of {function_name} answered {reply.get('StatusCode')}")
