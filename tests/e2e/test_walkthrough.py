"""The README's local-stack walkthrough, run as written: the ```sh block under "## The local stack" goes to bash
unchanged (in the repository, with its own state directory so it starts its own stack), and must succeed, find the
sample's connections in SQL, verify the incident and have the signed PagerDuty event accepted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The local stack\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh block in the README's local stack section"
    return match.group(1)


def conversations() -> dict[str, int]:
    """tshark's TCP and UDP conversations in the sample: the reference for the walkthrough's SQL."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is the reference")
    counts = {}
    for proto in ("tcp", "udp"):
        table = subprocess.run(["tshark", "-r", str(REPO / "tests" / "fixtures" / "sample.pcap"), "-q", "-z",
                                f"conv,{proto}"], capture_output=True, text=True, check=True).stdout
        counts[proto] = table.count("<->")
    return counts


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    for tool in ("curl", "openssl", "java", "mvn", "sed"):
        if shutil.which(tool) is None:
            pytest.skip(f"the walkthrough needs {tool}")
    if not (REPO / ".venv" / "bin" / "freezeframe").exists():
        pytest.skip("the walkthrough runs the clone's .venv")
    script = walkthrough()
    assert "freezeframe up" in script and "freezeframe down" in script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREEZEFRAME_", "AWS_"))}
    env.update(FREEZEFRAME_STATE_DIR=str(tmp_path / "state"), FREEZEFRAME_SPOOL_DIR=str(tmp_path / "spool"),
               TMPDIR=str(tmp_path))
    if "FREEZEFRAME_CACHE_DIR" in os.environ:
        env["FREEZEFRAME_CACHE_DIR"] = os.environ["FREEZEFRAME_CACHE_DIR"]
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=600, check=False)
    finally:
        subprocess.run([str(REPO / ".venv" / "bin" / "freezeframe"), "down"], cwd=REPO, env=env,
                       capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    rows = {proto: int(n) for proto, n in re.findall(r"^\|\s*(tcp|udp)\s*\|\s*(\d+)\s*\|", out, re.M)}
    assert rows == conversations(), out[-2000:]
    assert "stack stopped" in out
    accepted = re.findall(r'"accepted": ?\["([^"]+)"\]', out)
    assert len(accepted) == 2 and accepted[1].startswith("pd-"), out[-2000:]  # Alertmanager, then PagerDuty
    assert re.search(rf"incident {accepted[0]}: OK \(\d+ checks", out), out[-2000:]
