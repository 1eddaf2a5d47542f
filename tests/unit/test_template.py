"""template.yaml: it lints clean with cfn-lint and `sam validate --lint`, and its IAM and buckets keep the promises of
the design (no governance bypass, no version deletes, raw bucket lockable but unlocked by default)."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
TOOL_TIMEOUT_S = 300

FORBIDDEN_ACTIONS = ("s3:bypassgovernanceretention", "s3:deleteobjectversion")
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")


def _tool(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e '.[dev]')")
    return path


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which neither tool can reach the network or touch the user's SAM settings."""
    # sam checks PyPI for a newer version once a week; a fresh check time in a private config dir skips it.
    (tmp_path / "metadata.json").write_text(json.dumps({"lastVersionCheck": time.time(), "telemetryEnabled": False}))
    unreachable = "http://127.0.0.1:9"  # any request that slips through fails at once instead of hanging
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k.lower() not in ("no_proxy",)}
    env.update(
        SAM_CLI_TELEMETRY="0",
        __SAM_CLI_APP_DIR=str(tmp_path),
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        HTTP_PROXY=unreachable,
        HTTPS_PROXY=unreachable,
        http_proxy=unreachable,
        https_proxy=unreachable,
    )
    return env


def _run(command: list[str], env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    elapsed = time.monotonic() - started
    print(f"{Path(command[0]).name}: exit {result.returncode} in {elapsed:.1f}s")
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode} after {elapsed:.1f}s\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def test_cfn_lint_passes(offline_env: dict[str, str]) -> None:
    _run([str(_tool("cfn-lint")), str(TEMPLATE)], offline_env)


def test_sam_validate_lint_passes(offline_env: dict[str, str]) -> None:
    _run(
        [str(_tool("sam")), "validate", "--lint", "--region", "us-east-1", "--template-file", str(TEMPLATE)],
        offline_env,
    )


# ---------------------------------------------------------------- the template's own promises


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, matches = cfnlint_decode.decode(str(TEMPLATE))
    assert not matches, [str(m) for m in matches]
    assert parsed is not None
    return parsed


def _statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every policy statement anywhere in the template, including those inside Fn::If branches."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield node
        for value in node.values():
            yield from _statements(value)
    elif isinstance(node, list):
        for item in node:
            yield from _statements(item)


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    actions = actions if isinstance(actions, list) else [actions]
    # A computed action would hide from this test, so actions must be literal strings.
    assert all(isinstance(a, str) for a in actions), f"non-literal Action in {statement}"
    return [a.lower() for a in actions]


def _resources(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] in types}


def test_no_statement_grants_bypass_delete_or_wildcards(template: dict[str, Any]) -> None:
    allows = [s for s in _statements(template) if s["Effect"] == "Allow"]
    assert allows, "no Allow statements found: the walker is broken"
    for statement in allows:
        assert "NotAction" not in statement, f"Allow with NotAction grants nearly everything: {statement}"
        for action in _actions(statement):
            assert action not in ("*", "s3:*"), f"wildcard action {action!r} in {statement}"
            for forbidden in FORBIDDEN_ACTIONS:
                assert not fnmatch.fnmatchcase(forbidden, action), f"{action!r} grants {forbidden} in {statement}"


def test_function_roles_have_no_service_wildcards(template: dict[str, Any]) -> None:
    # The KMS key policy's root "kms:*" (which delegates to IAM) is the only service-wide grant allowed.
    for name, function in _resources(template, *FUNCTION_TYPES).items():
        for statement in _statements(function["Properties"].get("Policies", [])):
            for action in _actions(statement):
                assert not action.endswith(":*"), f"{name} grants {action!r}"


def test_function_policies_are_inline_statements(template: dict[str, Any]) -> None:
    # Managed policy names and SAM policy templates expand outside this file, where the checks above can't see them.
    for name, function in _resources(template, "AWS::Serverless::Function").items():
        policies = function["Properties"].get("Policies", [])
        assert isinstance(policies, list), f"{name}: Policies must be a list of inline documents"
        for policy in policies:
            assert isinstance(policy, dict) and "Statement" in policy, f"{name}: {policy!r} is not an inline policy"


def test_raw_bucket_is_lockable_but_has_no_default_retention(template: dict[str, Any]) -> None:
    raw = template["Resources"]["RawBucket"]["Properties"]
    assert raw["ObjectLockEnabled"] is True
    assert raw["VersioningConfiguration"]["Status"] == "Enabled"
    assert "Rule" not in raw.get("ObjectLockConfiguration", {}), "only a freeze may lock raw segments"
    rules = raw["LifecycleConfiguration"]["Rules"]
    assert any("NoncurrentVersionExpiration" in rule for rule in rules), "unfrozen versions must expire"


def test_evidence_bucket_has_default_compliance_retention(template: dict[str, Any]) -> None:
    evidence = template["Resources"]["EvidenceBucket"]["Properties"]
    assert evidence["ObjectLockEnabled"] is True
    assert evidence["VersioningConfiguration"]["Status"] == "Enabled"
    retention = evidence["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["Days"] == {"Ref": "EvidenceDefaultRetentionDays"}


@pytest.mark.parametrize("bucket", ["RawBucket", "EvidenceBucket"])
def test_buckets_are_kms_encrypted_private_tls_only_and_retained(template: dict[str, Any], bucket: str) -> None:
    resource = template["Resources"][bucket]
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    props = resource["Properties"]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert all(props["PublicAccessBlockConfiguration"].values())
    (policy,) = [
        res
        for res in _resources(template, "AWS::S3::BucketPolicy").values()
        if res["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    )


def test_key_rotates_and_is_retained(template: dict[str, Any]) -> None:
    key = template["Resources"]["DataKey"]
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True


def test_every_function_uses_the_core_layer(template: dict[str, Any]) -> None:
    global_layers = template.get("Globals", {}).get("Function", {}).get("Layers", [])
    functions = _resources(template, *FUNCTION_TYPES)
    assert functions
    for name, function in functions.items():
        layers = [*global_layers, *function["Properties"].get("Layers", [])]
        assert {"Ref": "CoreLayer"} in layers, f"{name} does not use CoreLayer"


def test_every_function_has_an_async_failure_destination(template: dict[str, Any]) -> None:
    for name, function in _resources(template, "AWS::Serverless::Function").items():
        props = function["Properties"]
        on_failure = props.get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure")
        assert on_failure or "DeadLetterQueue" in props, f"{name} has no DLQ or OnFailure destination"
