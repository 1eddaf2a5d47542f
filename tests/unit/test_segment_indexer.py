from pathlib import Path
from typing import Any

from freezeframe.config import Settings
from freezeframe.local.functions import load_handler

REPO = Path(__file__).resolve().parents[2]


def test_valid_records_are_counted_and_malformed_ones_reported(event: Any, lambda_context: Any) -> None:
    handler = load_handler(Settings(functions_dir=REPO / "functions"), "segment_indexer")
    result = handler(event("segment_indexer", "kafka_batch"), lambda_context)
    assert result["segments"] == 1
    assert [m["offset"] for m in result["malformed"]] == [42]
