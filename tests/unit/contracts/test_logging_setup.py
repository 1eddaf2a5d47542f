"""The core's loggers write through the function's powertools Logger (freezeframe.contracts.logsetup.function_logger).

In Lambda the service name is the function's (template.yaml: POWERTOOLS_SERVICE_NAME: freeze), so the core's
"freezeframe.*" loggers are not children of the handler's Logger: without the set-up their lines would go to the
root logger, without the handler's keys and below its level (Lambda's root logger drops INFO).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.functions import LocalContext
from moto import mock_aws

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings, reset_settings_cache
from freezeframe.contracts.logsetup import CORE_LOGGER

REPO = Path(__file__).resolve().parents[3]
SERVICE = "freeze-logsetup-test"  # as deployed: a service name other than the core's package name


@pytest.fixture
def core_logger_restored() -> Iterator[None]:
    """function_logger() re-points the process-wide "freezeframe" logger; other tests expect it untouched."""
    core = logging.getLogger(CORE_LOGGER)
    saved = (list(core.handlers), core.level, core.propagate)
    yield
    core.handlers[:] = saved[0]
    core.setLevel(saved[1])
    core.propagate = saved[2]


def _load_app(folder: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"freezeframe_logsetup_test_{folder}",
                                                  REPO / "functions" / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_core_loggers_line_carries_the_handlers_appended_keys_and_level(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], event: Any,
        core_logger_restored: None) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", SERVICE)
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    config = Settings(lock_retain_days=1)
    with mock_aws():
        s3io.client.cache_clear()
        s3 = s3io.client(config)
        s3io.ensure_buckets(s3, config)
        for name, value in {"FREEZEFRAME_RAW_BUCKET": config.raw_bucket,
                            "FREEZEFRAME_EVIDENCE_BUCKET": config.evidence_bucket,
                            "FREEZEFRAME_LOCK_RETAIN_DAYS": "1"}.items():
            monkeypatch.setenv(name, value)
        reset_settings_cache()
        app = _load_app("freeze")
        # The hand-off to the dissection (Lambda / Step Functions) is outside this test.
        monkeypatch.setattr(app, "start_dissection", lambda *args, **kwargs: None)
        request = event("freeze", "request")
        app.lambda_handler(request, LocalContext("freezeframe-freeze"))
    s3io.client.cache_clear()
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is left to a command's output (the CLI runs these handlers in-process)
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    # freezeframe.freeze.freeze logs "manifest written" at INFO with the stdlib logger; the Lambda context's keys
    # (function
    # name) and the service come only from the handler's Logger (inject_lambda_context), the level from its level.
    written = [line for line in lines if line.get("message") == "manifest written"]
    assert len(written) == 1, captured.err
    line = written[0]
    assert line["service"] == SERVICE
    assert line["level"] == "INFO"
    assert line["function_name"] == "freezeframe-freeze"
    assert line["incident_id"] == request["request"]["incident_id"]
