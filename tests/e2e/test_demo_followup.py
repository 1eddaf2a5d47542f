"""The README's "After the demo" block, run as written (each `freezeframe` line through the installed console
script, in an empty directory): the demo keeps its evidence, and query, report, export-pcap and verify work on it
after the demo exited. Expected values come from the sample's documented story (freezeframe_local.sample_context's
docstring) and from tshark/pcapio reading the bundled capture, not from the commands' own output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def followup_block() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## After the demo: its evidence\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "no sh block in the README's 'After the demo' section"
    return [line for line in match.group(1).splitlines() if line.strip()]


def packets(path: Path) -> int:
    """tshark's frame count: the reference reader."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is the reference")
    listing = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"], capture_output=True,
                             text=True, check=True).stdout
    return len(listing.split())


def test_the_demo_followup_commands_work_after_the_demo_exits(tmp_path: Path) -> None:
    lines = followup_block()
    assert lines[0] == "freezeframe demo" and {line.split()[1] for line in lines[1:]} == {
        "query", "report", "export-pcap", "verify"}
    console = Path(sys.executable).with_name("freezeframe")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FREEZEFRAME_", "AWS_"))}
    env["FREEZEFRAME_STATE_DIR"] = str(tmp_path / "state")  # no local stack: nothing of a running one is trusted
    outputs = []
    for line in lines:  # each a separate process: the demo has exited before the first follow-up starts
        argv = shlex.split(line)
        command = [str(console), *argv[1:]] if console.exists() else [sys.executable, "-m", "freezeframe_local.cli",
                                                                       *argv[1:]]
        # A configured signing key (here an unreachable KMS's) must never be what --demo trusts or asks.
        step_env = env if argv[1] == "demo" else {**env, "FREEZEFRAME_SIGNING_KEY_ID": "alias/someone-elses-key",
                                                  "FREEZEFRAME_KMS_ENDPOINT": "http://127.0.0.1:9"}
        done = subprocess.run(command, cwd=tmp_path, env=step_env, capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    demo, listen, terminating, _report, _export, verify = outputs
    directory = tmp_path / "freezeframe-demo"
    assert "evidence kept in" in demo and (directory / "demo.json").is_file()
    # The sample's node-a overflowed its listen queue by 37 + 112 (sample_context.LISTEN_OVERFLOWS).
    assert re.search(r"\|\s*node-a\s*\|\s*149\s*\|\s*149\s*\|", listen), listen
    # The 503 at 30 s went through shop/backend while backend-7c9d6b5f4-a1b2c was terminating.
    assert re.search(r"\|\s*503\s*\|.*\|\s*shop\s*\|\s*backend\s*\|\s*backend-7c9d6b5f4-a1b2c\s*\|", terminating)
    for page in (directory / "report.html", directory / "report-again.html"):
        html = page.read_text(encoding="utf-8")
        # Workloads (resolved pod IPs) and Services (resolved ClusterIPs) by name, and the new sections.
        for name in ("shop/checkout", "shop/frontend", "shop/backend (Service)", "payments", "Node health",
                     "Endpoint readiness"):
            assert name in html, (page, name)
    # Every packet of the bundled sample, merged back from the frozen segments.
    assert packets(directory / "incident.pcapng") == packets(REPO / "tests" / "fixtures" / "sample.pcap")
    assert "DEMO KEY" in verify and re.search(r"incident \S+: OK \(\d+ checks", verify), verify
    # Tampering with the kept evidence is caught, node state included: rewrite one frozen node-state document
    # consistently in the directory's store (bytes and index), so only the signed manifest's sha256 can tell.
    index_path = directory / "store" / "freezeframe-raw.jsonl"
    entries = [json.loads(line) for line in index_path.read_text(encoding="utf-8").splitlines()]
    target = next(e for e in entries if e["key"].startswith("nodestate/"))
    forged = (directory / "store" / "blobs" / target["sha256"]).read_bytes().replace(b'"TcpExt.ListenOverflows":',
                                                                                      b'"TcpExt.ListenOverflowz":')
    target["sha256"] = hashlib.sha256(forged).hexdigest()
    target["checksum_sha256"] = None
    (directory / "store" / "blobs" / target["sha256"]).write_bytes(forged)
    index_path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "freezeframe_local.cli", "verify", "--demo", "freezeframe-demo"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"{target['key']}@{target['version_id']}: sha256" in done.stdout
