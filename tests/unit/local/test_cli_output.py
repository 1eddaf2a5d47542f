"""The `freezeframe` command as a user runs it (a subprocess): stdout carries only the command's output, and an
expected failure is one line on stderr with exit status 2, never a traceback. Every subcommand has help text.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from freezeframe_local.cli import build_parser

from tests.fixtures.cli import HangUp, assert_one_line_failure, cli_env, closed_port, freezeframe


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An in-process moto S3 on loopback with the two buckets and no incidents."""
    from freezeframe_local.s3 import start_moto

    from freezeframe.adapters import s3 as s3io
    from freezeframe.contracts.config import Settings

    server, endpoint = start_moto()
    try:
        config = Settings(s3_endpoint=endpoint.url)
        s3io.ensure_buckets(s3io.client(config), config)
        yield endpoint.url
    finally:
        server.stop()


def test_demo_json_is_exactly_one_json_document_on_stdout(tmp_path: Path) -> None:
    result = freezeframe(["demo", "--json"], cli_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)  # fails on any log line or progress line beside the document
    assert document["incident_id"].startswith("am-")
    assert document["locked"] == document["segments"] > 0
    assert "agent: replaying" in result.stderr  # the progress went to stderr


def test_no_credentials_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # No --s3-endpoint and no stack: the command would call the region's S3 with the default credential chain.
    result = freezeframe(["report", "inc-none", "-o", str(tmp_path / "r.html")], cli_env(tmp_path))
    assert_one_line_failure(result, "no AWS credentials")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", [["report", "inc-none", "-o", "{tmp}/r.html"], ["verify", "inc-none"],
                                     ["export-pcap", "inc-none", "-o", "{tmp}/x.pcapng"]])
def test_no_such_incident_is_one_line_and_exit_2(command: list[str], s3_endpoint: str, tmp_path: Path) -> None:
    args = [arg.format(tmp=tmp_path) for arg in command]
    result = freezeframe([*args, "--s3-endpoint", s3_endpoint], cli_env(tmp_path))
    assert_one_line_failure(result, "inc-none")


def test_unreachable_s3_endpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A refused connection: one line, nothing written. The CLI tries a request 3 times (config.INTERACTIVE_S3), not
    the functions' 8 with back-off, which kept a user waiting 35-60 s."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = freezeframe(["report", "inc-none", "--s3-endpoint", endpoint, "-o", str(tmp_path / "r.html")],
                         cli_env(tmp_path))
    assert_one_line_failure(result, "cannot reach", endpoint)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(("chosen", "tries"), [(None, 3), ("2", 2)])
def test_the_cli_tries_an_s3_request_three_times_unless_told(chosen: str | None, tries: int, tmp_path: Path) -> None:
    """Each try reaches a server that hangs up at once; the user's FREEZEFRAME_S3_MAX_ATTEMPTS stands. (Fewer tries
    than the default, not more: botocore backs off between tries, and 5 tries kept this test waiting 23 s.)"""
    server = HangUp()
    try:
        extra = {"FREEZEFRAME_S3_MAX_ATTEMPTS": chosen} if chosen else {}
        result = freezeframe(["report", "inc-none", "--s3-endpoint", server.url, "-o", str(tmp_path / "r.html")],
                             cli_env(tmp_path, **extra))
    finally:
        server.close()
    assert_one_line_failure(result, "cannot reach", server.url)
    # One connection more than the tries, whatever the setting (1, 2, 3 and 5 tries gave 2, 3, 4 and 6): the HTTP
    # layer under botocore opens a second connection once when the first closes before any answer.
    assert server.connections == tries + 1


def test_unreachable_trino_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = freezeframe(["query", "--engine", "trino", "SELECT 1"], cli_env(tmp_path, FREEZEFRAME_TRINO_URL=url))
    assert_one_line_failure(result, url)


def test_unreachable_kafka_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    result = freezeframe(["topics", "--timeout", "2"], cli_env(tmp_path, FREEZEFRAME_KAFKA_BOOTSTRAP=bootstrap))
    assert_one_line_failure(result, bootstrap)


def test_a_reader_that_goes_away_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # `freezeframe scenarios --json | head -0`: the reader closes the pipe before the command writes.
    proc = subprocess.Popen([sys.executable, "-m", "freezeframe_local.cli", "scenarios", "--json"],
                            env=cli_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    result = subprocess.CompletedProcess(proc.args, proc.wait(timeout=60), "", stderr)
    assert_one_line_failure(result, "broken pipe")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser, str | None]]:
    """(name, parser, help) of every subcommand, at any depth."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, sub, helps.get(name)
                yield from _subparsers(sub)


def _agent_parser() -> Any:
    from freezeframe_agent.main import build_parser as agent_parser

    return agent_parser()


@pytest.mark.parametrize("parser", [build_parser(), _agent_parser()], ids=["freezeframe", "freezeframe-agent"])
def test_every_subcommand_has_help_text(parser: argparse.ArgumentParser) -> None:
    found = list(_subparsers(parser))
    assert len(found) >= 2
    missing = sorted(name for name, sub, help_text in found
                     if not (help_text or "").strip() or not (sub.description or help_text or "").strip())
    assert not missing, f"subcommands without help text: {missing}"
    # `freezeframe demo --help` shows it (the subcommand's parser has a description).
    without_description = sorted(name for name, sub, _ in found if not (sub.description or "").strip())
    assert not without_description, f"subcommands whose --help has no description: {without_description}"


RUN_PROBE = """
import atexit, gc, sys
from freezeframe_local.cli import run
atexit.register(lambda: print(f"at exit: frozen {gc.get_freeze_count() > 0}", file=sys.stderr))
sys.argv = ["freezeframe", *sys.argv[1:]]
run()
"""


def test_the_console_script_exits_with_the_commands_status_after_freezing_what_it_built(tmp_path: Path) -> None:
    # pyproject's console script is `run`: `main`, then the objects are frozen so the interpreter's last collection
    # skips them; exit handlers still run and the status is main's (0, then 2 for a bad input).
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["freezeframe"] == "freezeframe_local.cli:run"
    sample = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
    done = subprocess.run([sys.executable, "-c", RUN_PROBE, "dissect", str(sample), "--out", str(tmp_path / "out"),
                           "--json"], env=cli_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tables"]["connections"] > 0
    assert "at exit: frozen True" in done.stderr
    failed = subprocess.run([sys.executable, "-c", RUN_PROBE, "dissect", str(tmp_path / "missing.pcap"), "--out",
                             str(tmp_path / "out")], env=cli_env(tmp_path), capture_output=True, text=True,
                            timeout=120, check=False)
    assert_one_line_failure(failed, "not a readable file")
    assert "at exit: frozen True" in failed.stderr
