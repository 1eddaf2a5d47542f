"""checkov's CloudFormation checks over template.yaml: no failed check, and every accepted finding carries its reason
in the template (a `# checkov:skip=<id>:<reason>` comment inside the resource).

checkov pins dozens of packages that clash with the project's own, so it lives in a tool venv of its own under
freezeframe.contracts.config.cache_dir() (like LocalStack's), built once with one pip install of the pin below.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from freezeframe.contracts.config import cache_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHECKOV_PIN = "checkov==3.3.30"
VENV_NAME = "checkov-venv"
INSTALL_TIMEOUT_S = 900
# The findings the template accepts, each with its reason next to the resource. A new kind of skip must be added
# here on purpose, so a reviewer sees it.
ACCEPTED = {
    "CKV_AWS_18",  # S3 server access logs: CloudTrail data events instead
    "CKV_AWS_27",  # SQS with SSE-SQS rather than a customer key
    "CKV_AWS_115",  # no reserved concurrency where a bound exists elsewhere (or a throttle would lose evidence)
    "CKV_AWS_116",  # on-failure destinations rather than a DeadLetterQueue
    "CKV_AWS_117",  # no VPC
    "CKV_AWS_158",  # log groups with CloudWatch's own encryption
    "CKV_AWS_173",  # no secrets in environment variables
}


def _checkov() -> Path:
    """The python of the checkov tool venv, built (under a file lock, then renamed into place) if missing or stale."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / VENV_NAME
    marker = venv / "freezeframe-pin.json"
    with open(cache / f"{VENV_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and json.loads(marker.read_text()).get("pin") == CHECKOV_PIN:
            return venv / "bin" / "python"
        python = shutil.which("python3.11") or sys.executable
        building = cache / f"{VENV_NAME}.building"
        shutil.rmtree(building, ignore_errors=True)
        started = time.monotonic()
        subprocess.run([python, "-m", "venv", str(building)], check=True, timeout=120)
        install = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                  "--disable-pip-version-check", CHECKOV_PIN],
                                 capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        if install.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            pytest.fail(f"pip install {CHECKOV_PIN} failed:\n{install.stdout}\n{install.stderr}")
        shutil.rmtree(venv, ignore_errors=True)
        building.rename(venv)  # its python finds its packages through pyvenv.cfg, wherever the folder lives
        marker.write_text(json.dumps({"pin": CHECKOV_PIN}))
        print(f"built {venv} in {time.monotonic() - started:.0f}s")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def scan() -> dict[str, Any]:
    python = _checkov()
    started = time.monotonic()
    # The module rather than the bin/checkov script: the script's shebang names the folder the venv was built in.
    result = subprocess.run([str(python), "-m", "checkov.main", "--file", str(ROOT / "template.yaml"),
                             "--framework", "cloudformation", "--compact", "--output", "json", "--skip-download"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    print(f"checkov: exit {result.returncode} in {time.monotonic() - started:.1f}s")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr}")
    report = report[0] if isinstance(report, list) else report
    assert report["check_type"] == "cloudformation" and report["summary"]["parsing_errors"] == 0, report["summary"]
    return report


def test_template_passes_every_checkov_check_it_does_not_justify(scan: dict[str, Any]) -> None:
    summary, results = scan["summary"], scan["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert not failed, "checkov findings (fix them, or skip one with a reason in the resource):\n" + "\n".join(failed)
    assert summary["passed"] >= 30, f"checkov ran suspiciously few checks: {summary}"
    print(f"checkov {summary['checkov_version']}: {summary['passed']} passed, {summary['skipped']} skipped with a "
          f"reason, {summary['failed']} failed over {summary['resource_count']} resources")


def test_every_accepted_finding_is_justified_in_the_template(scan: dict[str, Any]) -> None:
    skipped: dict[str, list[str]] = defaultdict(list)
    for check in scan["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.split()) >= 5, f"{check['check_id']} on {check['resource']} is skipped without a reason"
        skipped[check["check_id"]].append(check["resource"])
    unexpected = sorted(set(skipped) - ACCEPTED)
    assert not unexpected, f"new kinds of accepted findings, review them and list them in ACCEPTED: {unexpected}"
