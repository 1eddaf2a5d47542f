"""Loading the Lambda handlers of functions/<name>/app.py in-process, with a Lambda-shaped context."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freezeframe.adapters.invoke import LOCAL_DISSECTION_FUNCTION  # noqa: F401 - the gateway's name for it
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

FUNCTION_DIRS = ("webhook", "freeze", "dissect", "segment_indexer", "k8s_indexer", "finalize")
DISSECTION = "dissection"
Handler = Callable[[dict[str, Any], Any], Any]
_lock = threading.Lock()
_loaded: dict[Path, Handler] = {}


@dataclass(slots=True)
class LocalContext:
    """The attributes of the AWS Lambda context object that handlers and powertools read."""

    function_name: str
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_ms: int = 900_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


def functions_dir(settings: Settings) -> Path:
    if settings.functions_dir is not None:
        return settings.functions_dir
    # An editable install keeps the core at <repo>/layers/core/freezeframe; the functions sit at <repo>/functions.
    candidate = Path(__file__).resolve().parents[3] / "functions"
    if not candidate.is_dir():
        raise ConfigError(f"cannot find the functions/ folder (looked at {candidate}); set FREEZEFRAME_FUNCTIONS_DIR")
    return candidate


def function_names(settings: Settings) -> dict[str, str]:
    """Deployed function name -> folder name."""
    return {"freezeframe-webhook": "webhook", settings.freeze_function: "freeze",
            settings.dissect_function: "dissect", "freezeframe-segment-indexer": "segment_indexer",
            "freezeframe-k8s-indexer": "k8s_indexer", "freezeframe-finalize": "finalize",
            LOCAL_DISSECTION_FUNCTION: DISSECTION}


def load_handler(settings: Settings, folder: str) -> Handler:
    if folder not in FUNCTION_DIRS:
        raise ConfigError(f"unknown function {folder!r}; known: {', '.join(FUNCTION_DIRS)}")
    path = functions_dir(settings) / folder / "app.py"
    with _lock:
        if path not in _loaded:
            spec = importlib.util.spec_from_file_location(f"freezeframe_function_{folder}", path)
            if spec is None or spec.loader is None:
                raise ConfigError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _loaded[path] = module.lambda_handler
        return _loaded[path]
