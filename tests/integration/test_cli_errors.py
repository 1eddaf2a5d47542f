"""An unreachable S3 endpoint is one line on stderr and exit status 2 (the rest of the CLI's expected failures are
in tests/unit/local/test_cli_output.py). Here because it waits out the S3 client's retries (~35-60 s)."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.cli import assert_one_line_failure, cli_env, closed_port, freezeframe


def test_unreachable_s3_endpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = freezeframe(["report", "inc-none", "--s3-endpoint", endpoint, "-o", str(tmp_path / "r.html")],
                         cli_env(tmp_path), timeout=300)
    assert_one_line_failure(result, "cannot reach", endpoint)
    assert not (tmp_path / "r.html").exists()
