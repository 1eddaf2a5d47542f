"""The dispatcher: asynchronous function invocation through the Lambda Invoke API (the local gateway speaks the
same API), and the hand-off from a freeze to its dissection (a Step Functions execution).

`FunctionInvoker` and `StateMachineStarter` are the typed interfaces (the one operation of each client that
freezeframe uses); `_client` and `_sfn_client` build the boto3 implementations."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol, cast

from botocore.exceptions import ClientError

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import FreezeframeError


class FunctionInvoker(Protocol):
    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> Mapping[str, Any]: ...


class StateMachineStarter(Protocol):
    """Step Functions' StartExecution; a name already used answers the error code ExecutionAlreadyExists."""

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> Mapping[str, Any]: ...


@lru_cache(maxsize=16)
def _client(settings: Settings) -> FunctionInvoker:
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    from botocore.config import Config  # noqa: PLC0415 - lazy, with boto3

    kwargs: dict[str, Any] = {"region_name": settings.region,
                              "config": Config(retries={"max_attempts": 5, "mode": "standard"})}
    if settings.lambda_endpoint:
        # The local gateway accepts only invocations signed with its stack's own key (never an account's real one).
        from freezeframe.adapters.invoke_key import credentials

        access_key, secret_key = credentials(settings)
        kwargs.update(endpoint_url=settings.lambda_endpoint, aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, aws_session_token=None)
    return cast(FunctionInvoker, boto3.client("lambda", **kwargs))


def invoke_async(settings: Settings, function_name: str, payload: Mapping[str, Any]) -> None:
    reply = _client(settings).invoke(FunctionName=function_name, InvocationType="Event",
                                                    Payload=json.dumps(dict(payload)).encode())
    if reply.get("StatusCode") != 202:
        raise FreezeframeError(f"async invoke of {function_name} answered {reply.get('StatusCode')}")


logger = logging.getLogger(__name__)
# Locally, the dissection state machine (template.yaml, DissectionStateMachine) is a pseudo-function of the
# local gateway (freezeframe_local.gateway): an async invoke of this name runs its steps in order.
LOCAL_DISSECTION_FUNCTION = "freezeframe-dissection"
_EXECUTION_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def execution_name(incident_id: str, nodes: Sequence[str]) -> str:
    """A Step Functions execution name (at most 80 of [A-Za-z0-9_-]) fixed by the incident and its node set.

    A Standard workflow refuses a second execution of the same name for 90 days, so a retried freeze with the same
    nodes cannot dissect twice; a freeze that found more nodes gets a new name and dissects them all again (parts
    have deterministic keys, so a rerun overwrites). The digest keeps distinct ids apart after the character swap."""
    digest = hashlib.sha256(json.dumps([incident_id, sorted(set(nodes))]).encode()).hexdigest()[:16]
    return f"{_EXECUTION_NAME_UNSAFE.sub('-', incident_id)[:63]}-{digest}"


@lru_cache(maxsize=16)
def _sfn_client(settings: Settings) -> StateMachineStarter:
    import boto3  # noqa: PLC0415 - lazy: boto3 takes 0.5 s to import
    from botocore.config import Config  # noqa: PLC0415 - lazy, with boto3

    return cast(StateMachineStarter, boto3.client("stepfunctions", region_name=settings.region,
                                                  config=Config(retries={"max_attempts": 5, "mode": "standard"})))


def start_dissection(settings: Settings, incident_id: str, nodes: Sequence[str],
                     follow_hold: bool = False) -> str | None:
    """Dissect the incident's nodes, then finalize it; with `follow_hold` (the freeze opened a hold) even when the
    freeze found no segment yet: the execution then dissects the segments the hold locks as they arrive
    (freezeframe.freeze.follow), so a freeze of a window that starts now still ends with tables.

    In AWS (FREEZEFRAME_DISSECT_STATE_MACHINE set): one execution of the dissection state machine; returns its
    name. Locally (no state machine): an async invoke of the local gateway's stand-in for the state machine, which
    runs the same steps in order (dissect per node with the Map's retries, then finalize); returns None."""
    if not nodes and not follow_hold:
        return None  # nothing was frozen and nothing will be, so there is nothing to dissect
    if not settings.dissect_state_machine:
        if settings.lambda_endpoint:
            invoke_async(settings, LOCAL_DISSECTION_FUNCTION,
                         {"incident_id": incident_id, "nodes": sorted(set(nodes))})
            return None
        # AWS without the state machine (a stack that predates it): dissect each node; nothing finalizes.
        logger.warning("FREEZEFRAME_DISSECT_STATE_MACHINE is not set: dissecting per node without a finalize step")
        for node in nodes:
            invoke_async(settings, settings.dissect_function, {"incident_id": incident_id, "node": node})
        return None
    name = execution_name(incident_id, nodes)
    try:
        _sfn_client(settings).start_execution(
            stateMachineArn=settings.dissect_state_machine, name=name,
            input=json.dumps({"incident_id": incident_id, "nodes": sorted(set(nodes))}))
    except ClientError as exc:
        # botocore's modelled ExecutionAlreadyExists is a ClientError with that code.
        if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise
        # the same incident and nodes are already being (or were) dissected: a retried freeze
    return name
