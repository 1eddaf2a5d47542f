"""template.yaml: it lints clean with cfn-lint and `sam validate --lint`, and its IAM and buckets keep the promises of
the design (no governance bypass, no version deletes, raw bucket lockable but unlocked by default)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"
FUNCTIONS_DIR = ROOT / "functions"
EVENTS_DIR = ROOT / "events"
TOOL_TIMEOUT_S = 300

FORBIDDEN_ACTIONS = (
    "s3:bypassgovernanceretention",
    "s3:deleteobjectversion",
    "s3:deleteobject",
    "s3:putbucketobjectlockconfiguration",
)
LOCK_ACTIONS = ("s3:putobjectretention", "s3:putobjectlegalhold")
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
BUCKETS = ("RawBucket", "EvidenceBucket")
# Functions that lock raw segment versions in place: the freeze, and the indexer that locks late segments into holds.
RAW_LOCKERS = {"freeze", "segment_indexer"}
# An object ARN must name a prefix before any wildcard ("${EvidenceBucket.Arn}/incidents/*", never ".../*").
_BUCKET_ARN_SUB = re.compile(r"^\$\{(?P<bucket>\w+)\.Arn\}(?P<rest>.*)$")
_PREFIXED_OBJECTS = re.compile(r"^/[^*?/]+/")
# Function folders on disk (a folder per handler, functions/<name>/app.py), read when the module is collected.
FUNCTION_FOLDERS = sorted(p.name for p in FUNCTIONS_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


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


def _key_grants(function: dict[str, Any]) -> set[tuple[str, str]]:
    """(action, resource pattern) of a function's Allow statements on the evidence bucket's keys."""
    out = set()
    for statement in _statements(function["Properties"].get("Policies", [])):
        if statement["Effect"] != "Allow":
            continue
        resources = statement.get("Resource")
        for resource in resources if isinstance(resources, list) else [resources]:
            text = resource.get("Fn::Sub") if isinstance(resource, dict) else resource
            if isinstance(text, str) and text.startswith("${EvidenceBucket.Arn}/"):
                out.update((action, text.removeprefix("${EvidenceBucket.Arn}/")) for action in _actions(statement))
    return out


def test_the_dissect_function_may_write_and_read_every_key_of_the_views_fold(template: dict[str, Any]) -> None:
    # LocalStack does not enforce IAM: what the fold, compaction and route steps write and read (their keys from
    # contracts.keys) must each be granted here, or they fail in AWS only.
    from freezeframe.contracts import keys

    grants = _key_grants(template["Resources"][_function_folders(template)["dissect"]])
    written = [keys.view_bucket_key("connections", "2026-01-01", "inc-1", 3, 1),
               keys.view_compact_key("dns", "2026-01-01", "inc-1", 2), keys.fold_plan_key("inc-1"),
               keys.fold_compact_items_key("inc-1"), keys.fold_result_key("inc-1", "r1", 3, 2),
               keys.fold_compact_result_key("inc-1", "r1", "tls", 0), keys.fold_flows_key("inc-1", "r1", 3),
               keys.fold_route_key("inc-1", 7, "node-a", "0e" * 16, "group-00001")]
    for key in written:
        for action in ("s3:putobject", "s3:getobject"):
            assert any(a == action and fnmatch.fnmatchcase(key, pattern) for a, pattern in grants), (action, key)


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


# ---------------------------------------------------------------- functions on disk and their least privilege


def _function_folders(template: dict[str, Any]) -> dict[str, str]:
    """functions/<folder>/ -> the logical id of the template function built from it."""
    out: dict[str, str] = {}
    for name, function in _resources(template, "AWS::Serverless::Function").items():
        parts = str(function["Properties"].get("CodeUri", "")).strip("/").split("/")
        if len(parts) == 2 and parts[0] == FUNCTIONS_DIR.name:
            assert parts[1] not in out, f"{out.get(parts[1])} and {name} both build functions/{parts[1]}/"
            out[parts[1]] = name
    return out


def _bucket_targets(statement: dict[str, Any]) -> list[tuple[str, str]]:
    """(bucket logical id or "*", the ARN's part after the bucket) for every Resource of a statement."""
    resources = statement.get("Resource", [])
    resources = resources if isinstance(resources, list) else [resources]
    targets = []
    for resource in resources:
        if resource == "*":
            targets.append(("*", "*"))
        elif isinstance(resource, dict) and "Fn::GetAtt" in resource:
            target = resource["Fn::GetAtt"]
            logical, attribute = target if isinstance(target, list) else target.split(".", 1)
            if logical in BUCKETS and attribute == "Arn":
                targets.append((logical, ""))
        elif isinstance(resource, dict) and "Fn::Sub" in resource:
            body = resource["Fn::Sub"]
            match = _BUCKET_ARN_SUB.match(body if isinstance(body, str) else body[0])
            if match and match["bucket"] in BUCKETS:
                targets.append((match["bucket"], match["rest"]))
            archive = re.match(r"^\$\{ArchiveBucketArn\}(?P<rest>.*)$", body if isinstance(body, str) else body[0])
            if archive:  # the archive account's bucket, a parameter (replication writes replicas there)
                targets.append(("ArchiveBucketArn", archive["rest"]))
    return targets


def _grants(statement: dict[str, Any], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action, granted) for granted in _actions(statement))


def _allows(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _statements(function["Properties"].get("Policies", [])) if s["Effect"] == "Allow"]


def test_function_folders_on_disk_exist() -> None:
    assert FUNCTIONS_DIR.is_dir(), FUNCTIONS_DIR
    assert FUNCTION_FOLDERS, f"no function folders under {FUNCTIONS_DIR}: the scan is broken"


def test_every_function_folder_is_deployed_and_every_function_has_a_folder(template: dict[str, Any]) -> None:
    deployed = _function_folders(template)
    missing = sorted(set(FUNCTION_FOLDERS) - set(deployed))
    assert not missing, f"functions/ folders with no template function (CodeUri functions/<folder>/): {missing}"
    stale = sorted(set(deployed) - set(FUNCTION_FOLDERS))
    assert not stale, f"template functions whose CodeUri folder does not exist: {stale}"
    for name in _resources(template, "AWS::Serverless::Function"):
        assert name in deployed.values(), f"{name} is not built from a functions/<folder>/ CodeUri"


@pytest.mark.parametrize("folder", FUNCTION_FOLDERS)
def test_every_function_has_sample_events(folder: str) -> None:
    samples = sorted((EVENTS_DIR / folder).glob("*.json"))
    assert samples, f"no events/{folder}/*.json: every function needs a sample for sam local invoke and the tests"
    for sample in samples:
        assert isinstance(json.loads(sample.read_text(encoding="utf-8")), dict), f"{sample} is not a JSON object"


@pytest.mark.parametrize("action", LOCK_ACTIONS)
def test_only_the_freeze_and_the_segment_indexer_lock_raw_segments(template: dict[str, Any], action: str) -> None:
    by_logical = {logical: folder for folder, logical in _function_folders(template).items()}
    lockers = set()
    for name, function in _resources(template, *FUNCTION_TYPES).items():
        for statement in _allows(function):
            buckets = {bucket for bucket, _ in _bucket_targets(statement)}
            if _grants(statement, action) and buckets & {"RawBucket", "*"}:
                lockers.add(by_logical.get(name, name))
    assert lockers == RAW_LOCKERS, f"{action} on the raw bucket: {sorted(lockers)}, expected {sorted(RAW_LOCKERS)}"


@pytest.mark.parametrize("action", LOCK_ACTIONS)
def test_nothing_else_in_the_stack_may_put_retention_or_legal_hold_anywhere(template: dict[str, Any],
                                                                           action: str) -> None:
    # Any bucket, any resource type (functions, the state machine's role, managed policies): only the two lockers.
    # The legal-hold release path may switch holds OFF (and only OFF): tests/unit/deploy/test_template_legal_hold.py.
    by_logical = {logical: folder for folder, logical in _function_folders(template).items()}
    holders = {by_logical.get(name, name) for name, resource in template["Resources"].items()
               for statement in _statements(resource.get("Properties", {}))
               if statement["Effect"] == "Allow" and _grants(statement, action)
               and not (name == "LegalHoldReleasePolicy" and action == "s3:putobjectlegalhold")}
    # The node agents lock their recording jobs' segments at upload (jobs/* only: see test_template_deploy.py).
    expected = RAW_LOCKERS | ({"NodeAgentPolicy"} if action == "s3:putobjectretention" else set())
    assert holders == expected, f"{action}: {sorted(holders)}, expected {sorted(expected)}"


def test_k8s_indexer_cannot_lock_or_touch_raw_segments(template: dict[str, Any]) -> None:
    function = template["Resources"][_function_folders(template)["k8s_indexer"]]
    allows = _allows(function)
    assert allows, "the k8s indexer has no policy statements: the walker is broken"
    for statement in allows:
        for action in (*LOCK_ACTIONS, "s3:getobjectretention", "s3:getobjectlegalhold"):
            assert not _grants(statement, action), f"the k8s indexer may {action}: {statement}"
        assert "RawBucket" not in {bucket for bucket, _ in _bucket_targets(statement)}, statement


def test_no_bucket_grant_covers_a_whole_bucket(template: dict[str, Any]) -> None:
    allows = [s for s in _statements(template) if s["Effect"] == "Allow"]
    s3_statements = [s for s in allows if any(a.startswith("s3:") for a in _actions(s))]
    assert s3_statements, "no S3 grants found: the walker is broken"
    for statement in s3_statements:
        targets = _bucket_targets(statement)
        assert targets, f"S3 grant on something that is not one of {BUCKETS}: {statement}"
        for bucket, rest in targets:
            assert bucket != "*", f"S3 grant on Resource '*': {statement}"
            # The bucket ARN itself (listing) or objects under a named prefix; never every object of a bucket.
            assert rest == "" or _PREFIXED_OBJECTS.match(rest), f"{bucket}{rest} is not under a prefix: {statement}"


# ---------------------------------------------------------------- query side: Glue, Athena, alarms

GLUE_BEGIN = "  # BEGIN freezeframe.investigate.glue\n"
GLUE_END = "  # END freezeframe.investigate.glue\n"
REGENERATE = (
    "template.yaml's Glue resources differ from freezeframe.contracts.schemas: replace the block between "
    f"{GLUE_BEGIN.strip()!r} and {GLUE_END.strip()!r} with the output of "
    "`PYTHONPATH=layers/core python -m freezeframe.investigate.glue --yaml`"
)


def _glue() -> Any:
    sys.path.insert(0, str(ROOT / "layers" / "core"))
    from freezeframe.investigate import glue

    return glue


def test_glue_block_is_exactly_the_generated_yaml() -> None:
    text = TEMPLATE.read_text(encoding="utf-8")
    assert text.count(GLUE_BEGIN) == text.count(GLUE_END) == 1, "the generated Glue block's markers are missing"
    block = text[text.index(GLUE_BEGIN) + len(GLUE_BEGIN):text.index(GLUE_END)]
    assert block == _glue().template_yaml(), REGENERATE


SCENARIOS_BEGIN = "  # BEGIN freezeframe.investigate.scenarios\n"
SCENARIOS_END = "  # END freezeframe.investigate.scenarios\n"


def test_scenarios_block_is_exactly_the_generated_yaml(template: dict[str, Any]) -> None:
    from freezeframe.investigate import scenarios

    text = TEMPLATE.read_text(encoding="utf-8")
    assert text.count(SCENARIOS_BEGIN) == text.count(SCENARIOS_END) == 1, "the named queries' markers are missing"
    block = text[text.index(SCENARIOS_BEGIN) + len(SCENARIOS_BEGIN):text.index(SCENARIOS_END)]
    assert block == scenarios.template_yaml(), (
        "template.yaml's named queries differ from freezeframe.investigate.scenarios: "
        "replace the block between the markers "
        "with the output of `PYTHONPATH=layers/core python -m freezeframe.investigate.scenarios --yaml`")
    named = _resources(template, "AWS::Athena::NamedQuery")
    assert set(named) == set(scenarios.template_resources())
    assert template["Resources"][scenarios.WORKGROUP_LOGICAL_ID]["Type"] == "AWS::Athena::WorkGroup"
    assert template["Resources"][scenarios.DATABASE_LOGICAL_ID]["Type"] == "AWS::Glue::Database"


def test_glue_resources_are_the_schemas_and_nothing_else(template: dict[str, Any]) -> None:
    glue = _glue()
    expected = glue.template_resources()
    actual = _resources(template, "AWS::Glue::Database", "AWS::Glue::Table")
    assert set(actual) == set(expected), REGENERATE
    for name, resource in expected.items():
        assert actual[name] == resource, f"{name}: {REGENERATE}"
    assert template["Parameters"][glue.DATABASE_NAME_PARAMETER]["Default"] == glue.DEFAULT_DATABASE


def test_athena_workgroup_enforces_encrypted_results_and_a_scan_cutoff(template: dict[str, Any]) -> None:
    (workgroup,) = _resources(template, "AWS::Athena::WorkGroup").values()
    config = workgroup["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == {"Ref": "AthenaBytesScannedCutoffPerQuery"}
    assert template["Parameters"]["AthenaBytesScannedCutoffPerQuery"]["Type"] == "Number"
    results = config["ResultConfiguration"]
    assert results["OutputLocation"] == {"Fn::Sub": "s3://${EvidenceBucket}/athena-results/"}
    assert results["EncryptionConfiguration"] == {
        "EncryptionOption": "SSE_KMS",
        "KmsKey": {"Fn::GetAtt": ["DataKey", "Arn"]},
    }


def _glue_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for name, resource in template["Resources"].items():
        for statement in _statements(resource.get("Properties", {})):
            if statement["Effect"] == "Allow" and any(a.startswith("glue:") for a in _actions(statement)):
                out.setdefault(name, []).append(statement)
    return out


def test_only_dissect_and_finalize_register_partitions_and_only_in_their_database(template: dict[str, Any]) -> None:
    grants = _glue_statements(template)
    folders = _function_folders(template)
    assert set(grants) == {folders["dissect"], folders["finalize"]}, f"glue grants: {sorted(grants)}"
    for statement in [*grants[folders["dissect"]], *grants[folders["finalize"]]]:
        assert set(_actions(statement)) <= {"glue:batchcreatepartition", "glue:gettable"}, statement
        resources = statement["Resource"]
        assert resources != "*" and isinstance(resources, list), statement
        arns = [r["Fn::Sub"] for r in resources]
        prefix = "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:"
        assert sorted(arns) == sorted(
            [f"{prefix}catalog", f"{prefix}database/${{GlueDatabase}}", f"{prefix}table/${{GlueDatabase}}/*"]
        ), statement


def _alarms(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [res["Properties"] for res in _resources(template, "AWS::CloudWatch::Alarm").values()]


def _alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(namespace, metric name, first dimension value) of a simple or metric-math alarm."""
    if "MetricName" in alarm:
        return [(alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"][0]["Value"])]
    return [
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"],
         m["MetricStat"]["Metric"]["Dimensions"][0]["Value"])
        for m in alarm["Metrics"] if "MetricStat" in m
    ]


def test_every_function_has_an_errors_alarm(template: dict[str, Any]) -> None:
    watched = {value["Ref"] for alarm in _alarms(template) if "MetricName" in alarm
               for ns, metric, value in _alarm_metrics(alarm) if (ns, metric) == ("AWS/Lambda", "Errors")}
    functions = set(_resources(template, *FUNCTION_TYPES))
    assert functions and functions <= watched, f"functions without an Errors alarm: {sorted(functions - watched)}"


def test_every_dead_letter_queue_has_a_depth_alarm(template: dict[str, Any]) -> None:
    queues = set(_resources(template, "AWS::SQS::Queue"))
    depth_alarms = {
        value["Fn::GetAtt"][0]: alarm
        for alarm in _alarms(template)
        for ns, metric, value in _alarm_metrics(alarm)
        if (ns, metric) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    }
    assert queues and queues <= set(depth_alarms), f"queues without a depth alarm: {sorted(queues - set(depth_alarms))}"
    for alarm in depth_alarms.values():
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0


def test_freeze_failures_alarm_within_a_minute(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["FreezeFailuresAlarm"]["Properties"]
    metrics = _alarm_metrics(alarm)
    assert ("AWS/Lambda", "Errors", {"Ref": "FreezeFunction"}) in metrics
    assert ("AWS/Lambda", "Throttles", {"Ref": "FreezeFunction"}) in metrics
    assert all(m["MetricStat"]["Period"] == 60 for m in alarm["Metrics"] if "MetricStat" in m)


def test_alarms_notify_the_optional_topic(template: dict[str, Any]) -> None:
    expected = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    alarms = _alarms(template)
    assert alarms
    for alarm in alarms:
        assert alarm["AlarmActions"] == alarm["OKActions"] == expected, alarm
        assert alarm["TreatMissingData"] == "notBreaching"
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_samconfig_default_environment_overrides_only_template_parameters(template: dict[str, Any]) -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))["default"]
    assert config["global"]["parameters"]["region"] == "us-east-1"
    assert config["global"]["parameters"]["stack_name"]
    deploy = config["deploy"]["parameters"]
    assert deploy["resolve_s3"] is True
    assert set(deploy["capabilities"].split()) >= {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"}
    overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"])
    unknown = sorted(set(overrides) - set(template["Parameters"]))
    assert not unknown, f"samconfig.toml overrides parameters the template does not have: {unknown}"


# ---------------------------------------------------------------- lifecycle, throttling, fan-out, lag, outputs


def _rules(template: dict[str, Any], bucket: str) -> dict[str, dict[str, Any]]:
    rules = template["Resources"][bucket]["Properties"]["LifecycleConfiguration"]["Rules"]
    return {rule["Id"]: rule for rule in rules}


def test_raw_bucket_expires_unfrozen_versions_after_a_parameter(template: dict[str, Any]) -> None:
    enabled = [rule for rule in _rules(template, "RawBucket").values() if rule["Status"] == "Enabled"]
    expiring = [rule for rule in enabled if "ExpirationInDays" in rule and "Prefix" not in rule]
    assert expiring, "no whole-bucket expiry of current raw versions"
    for rule in expiring:
        assert rule["ExpirationInDays"] == {"Ref": "RawExpireDays"}
        assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1
    parameter = template["Parameters"]["RawExpireDays"]
    assert parameter["Type"] == "Number" and parameter["MinValue"] >= 1


def test_evidence_is_tiered_to_classes_athena_can_still_read(template: dict[str, Any]) -> None:
    transitions = [t for rule in _rules(template, "EvidenceBucket").values() if rule["Status"] == "Enabled"
                   for t in rule.get("Transitions", [])]
    assert [t["StorageClass"] for t in transitions] == ["STANDARD_IA", "GLACIER_IR"]
    days = [t["TransitionInDays"]["Ref"] for t in transitions]
    assert days == ["EvidenceInfrequentAccessDays", "EvidenceGlacierDays"]
    # S3 refuses Standard-IA before 30 days; Glacier IR must follow at least 30 days of IA.
    assert template["Parameters"][days[0]]["MinValue"] >= 30
    assert template["Parameters"][days[1]]["MinValue"] >= template["Parameters"][days[0]]["MinValue"] + 30
    # Flexible Retrieval and Deep Archive need a restore before a read: Athena and verify would fail on them.
    assert not {t["StorageClass"] for t in transitions} & {"GLACIER", "DEEP_ARCHIVE"}


def _webhook(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"][_function_folders(template)["webhook"]]["Properties"]


def test_webhook_is_throttled_behind_both_doors(template: dict[str, Any]) -> None:
    props = _webhook(template)
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasWebhookConcurrencyCap", {"Ref": "WebhookReservedConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert props["FunctionUrlConfig"]["AuthType"] == "NONE"  # authenticated in code (HMAC, bearer tokens)
    apis = _resources(template, "AWS::Serverless::HttpApi")
    assert set(apis) == {"WebhookHttpApi"}
    routes = apis["WebhookHttpApi"]["Properties"]["DefaultRouteSettings"]
    assert routes["ThrottlingRateLimit"] == {"Ref": "HttpApiRateLimit"}
    assert routes["ThrottlingBurstLimit"] == {"Ref": "HttpApiBurstLimit"}
    assert apis["WebhookHttpApi"]["Properties"]["AccessLogSettings"]["DestinationArn"]


def test_manual_freeze_has_an_iam_authenticated_route_and_only_it(template: dict[str, Any]) -> None:
    events = _webhook(template)["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]): e["Properties"].get("Auth", {}).get("Authorizer")
              for e in events.values() if e["Type"] == "HttpApi"}
    assert routes.pop(("POST", "/v1/freeze")) == "AWS_IAM"
    # Webhook senders cannot sign with SigV4: their routes authenticate in code, as on the Function URL.
    assert routes and set(routes.values()) == {None}, routes
    assert {"/v1/alerts/alertmanager", "/v1/alerts/pagerduty"} <= {path for _, path in routes}
    assert template["Resources"]["WebhookHttpApi"]["Properties"]["Auth"]["EnableIamAuthorizer"] is True
    (statement,) = template["Resources"]["ManualFreezeInvokePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert _actions(statement) == ["execute-api:invoke"]
    assert statement["Resource"]["Fn::Sub"].endswith("${WebhookHttpApi}/*/POST/v1/freeze")


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["DissectionStateMachine"]["Properties"]["Definition"]


def _states(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in definition["States"].items():
        yield name, state
        if state["Type"] == "Map":
            yield from _states(state["ItemProcessor"])


def test_dissection_fans_out_over_node_chunks_with_retries_catches_and_a_dead_letter_queue(
        template: dict[str, Any]) -> None:
    machine = template["Resources"]["DissectionStateMachine"]["Properties"]
    definition = _definition(template)
    states = dict(_states(definition))
    top = definition["States"]
    # Plan, then a Distributed Map over the (node, chunk) items the plan wrote to S3, then a Map over the nodes.
    plan = top[definition["StartAt"]]
    assert plan["Parameters"]["Payload"]["action"] == "plan"
    chunks = top[plan["Next"]]
    assert chunks["Type"] == "Map" and chunks["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert chunks["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert chunks["ItemReader"]["Parameters"] == {"Bucket.$": "$.plan.bucket", "Key.$": "$.plan.key"}
    assert 0 < chunks["MaxConcurrency"] <= 1000
    chunk_task = chunks["ItemProcessor"]["States"][chunks["ItemProcessor"]["StartAt"]]
    assert chunk_task["Parameters"]["Payload"] == {"action": "chunk", "item.$": "$.item"}
    fan_out = top[chunks["Next"]]
    assert fan_out["Type"] == "Map" and fan_out["ItemsPath"] == "$.plan.nodes" and fan_out["MaxConcurrency"] > 0
    tasks = {name: state for name, state in states.items() if state["Type"] == "Task"}
    invokes = {name: state for name, state in tasks.items() if state["Resource"].endswith(":lambda:invoke")}
    dead_letters = {name for name, state in tasks.items() if state["Resource"].endswith(":sqs:sendMessage")}
    substitutions = machine["DefinitionSubstitutions"]
    assert {state["Parameters"]["FunctionName"] for state in invokes.values()} == {
        "${DissectFunctionArn}", "${FinalizeFunctionArn}"}
    assert substitutions["DissectFunctionArn"] == {"Fn::GetAtt": ["DissectFunction", "Arn"]}
    assert substitutions["FinalizeFunctionArn"] == {"Fn::GetAtt": ["FinalizeFunction", "Arn"]}
    assert substitutions["DeadLetterQueueUrl"] == {"Ref": "DissectionDeadLetterQueue"}
    for name, state in invokes.items():
        retried = {error for retrier in state["Retry"] for error in retrier["ErrorEquals"]}
        assert {"Lambda.TooManyRequestsException", "States.ALL"} <= retried, name
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["Next"] in dead_letters, name
    for name in dead_letters:
        assert tasks[name]["Parameters"]["QueueUrl"] == "${DeadLetterQueueUrl}"
    # The corrupt-segment error the dissect function raises is not worth a retry, per chunk and per node.
    from freezeframe.contracts.errors import SegmentCorruptError

    for state in (chunk_task, states["DissectNode"]):
        (no_retry,) = [r for r in state["Retry"] if r["ErrorEquals"] == [SegmentCorruptError.__name__]]
        assert no_retry["MaxAttempts"] == 0
    # A failed chunk ends its own child execution as a Pass: the Map goes on, and so does the node's merge.
    assert states[chunk_task["Catch"][0]["Next"]]["Next"] == "ChunkFailed"
    assert states["ChunkFailed"]["Type"] == "Pass" and chunks["ToleratedFailurePercentage"] == 100
    # Finalize runs once, after the Maps, on the node results.
    (finalize_state,) = [s for s in invokes.values() if s["Parameters"]["FunctionName"] == "${FinalizeFunctionArn}"]
    # Between them the views' fold: plan-fold sizes its buckets; with more than one, a Distributed Map routes the
    # sources, one folds each bucket, and one re-points service_flows when there are any; with one, straight on.
    plan_fold = top[fan_out["Next"]]
    assert plan_fold["Parameters"]["Payload"]["action"] == "plan-fold" and plan_fold["ResultPath"] == "$.fold"
    sharded = top[plan_fold["Next"]]
    assert sharded["Type"] == "Choice" and top[sharded["Default"]] is finalize_state
    (many,) = sharded["Choices"]
    assert many == {"Variable": "$.fold.buckets", "NumericGreaterThan": 1, "Next": "RouteSources"}
    steps = []
    state = top[many["Next"]]
    while state is not finalize_state:
        if state["Type"] == "Choice":
            # without service_flows straight to the compaction's plan, without groups to compact to finalize
            assert top[state["Default"]] in (finalize_state, top["PlanCompact"])
            state = top[state["Choices"][0]["Next"]]
            continue
        if state["Type"] == "Task":  # plan-compact: a failure is caught, dead-lettered, and finalize runs
            assert state["Parameters"]["Payload"]["action"] == "plan-compact"
            assert state["ResultPath"] == "$.compact"
            assert top[top[state["Catch"][0]["Next"]]["Next"]] is finalize_state
            steps.append(("plan-compact", None, None))
            state = top[state["Next"]]
            continue
        assert state["Type"] == "Map" and state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        assert state["ItemReader"]["Parameters"]["Bucket.$"] in ("$.fold.bucket", "$.compact.bucket")
        assert state["ToleratedFailurePercentage"] == 100 and 0 < state["MaxConcurrency"] <= 1000
        task = state["ItemProcessor"]["States"][state["ItemProcessor"]["StartAt"]]
        steps.append((task["Parameters"]["Payload"]["action"], task["Parameters"]["Payload"].get("phase"),
                      state["ItemReader"]["Parameters"]["Key.$"]))
        state = top[state["Next"]]
    # Each Map reads its own items: the sources, the buckets, the flow tasks (plan-fold's keys).
    assert steps == [("route", None, "$.fold.route_key"), ("fold", 1, "$.fold.fold_key"),
                     ("fold", 2, "$.fold.flows_key"), ("plan-compact", None, None),
                     ("compact", None, "$.compact.compact_key")]
    assert top["AnyServiceFlows"]["Default"] == "PlanCompact" and top["FoldServiceFlows"]["Next"] == "PlanCompact"
    assert {key: plan_fold["ResultSelector"][f"{key}.$"] for key in ("route_key", "fold_key", "flows_key")} == {
        key: f"$.Payload.{key}" for key in ("route_key", "fold_key", "flows_key")}
    assert top[top[plan_fold["Catch"][0]["Next"]]["Next"]] is finalize_state  # finalize still writes the summary
    assert finalize_state["Parameters"]["Payload"]["nodes.$"] == fan_out["ResultPath"]
    # The next pass of an open hold plans again.
    assert top["NextPass"]["Next"] == definition["StartAt"]
    # The Distributed Map may start its own child executions, by the machine's name (no circular reference).
    role = [s for s in _statements(machine["Policies"]) if "states:startexecution" in _actions(s)]
    assert [s["Resource"]["Fn::Sub"].endswith(":stateMachine:${AWS::StackName}-dissection") for s in role] == [True]
    assert machine["Name"] == {"Fn::Sub": "${AWS::StackName}-dissection"}


def test_the_chunk_items_the_planner_writes_are_what_the_chunk_task_reads(template: dict[str, Any]) -> None:
    """The Map passes each item through unchanged; the dissect function's chunk action parses it."""
    from freezeframe.dissect.plan import SECOND_NS, SegmentSpan, chunk_of_item, plan_node

    (chunk,) = plan_node("node-a", [SegmentSpan("k", 0, 60 * SECOND_NS, 10, 100)], chunk_ns=120 * SECOND_NS)
    item = json.loads(json.dumps(chunk.to_item("inc-1")))
    assert chunk_of_item(item)[0:2] == ("node-a", 0)
    handler = (FUNCTIONS_DIR / "dissect" / "app.py").read_text(encoding="utf-8")
    assert 'event.get("item")' in handler


def test_state_machine_node_results_are_what_finalize_parses(template: dict[str, Any]) -> None:
    from freezeframe.dissect.finalize import parse_event

    states = dict(_states(_definition(template)))
    done = {key.removesuffix(".$"): "node-a" if key.startswith("node") else "done"
            for key in states["DissectNode"]["ResultSelector"]}
    failed = {key.removesuffix(".$"): value if not key.endswith(".$") else ("node-b" if key.startswith("node")
                                                                            else "States.Timeout")
              for key, value in states["NodeFailed"]["Parameters"].items()}
    incident_id, outcomes = parse_event({"incident_id": "inc-1", "nodes": [done, failed]})
    assert [(o.node, o.state, o.error) for o in outcomes] == [("node-a", "done", None),
                                                             ("node-b", "failed", "States.Timeout")]
    # The Choice after finalize reads the state the finalize handler returns.
    choice = _definition(template)["States"]["EveryNodeDissected"]
    assert choice["Choices"][0]["StringEquals"] == "complete"
    handler = (FUNCTIONS_DIR / "finalize" / "app.py").read_text(encoding="utf-8")
    assert '"state": summary["state"]' in handler and '"summary_key"' in handler


def test_freeze_starts_the_state_machine_and_no_longer_invokes_dissect(template: dict[str, Any]) -> None:
    folders = _function_folders(template)
    freeze = template["Resources"][folders["freeze"]]["Properties"]
    from freezeframe.contracts.config import ENV_DISSECT_STATE_MACHINE

    assert freeze["Environment"]["Variables"][ENV_DISSECT_STATE_MACHINE] == {"Ref": "DissectionStateMachine"}
    actions = {a for s in _allows(template["Resources"][folders["freeze"]]) for a in _actions(s)}
    assert "states:startexecution" in actions and "lambda:invokefunction" not in actions
    machine_role = template["Resources"]["DissectionStateMachine"]["Properties"]["Policies"]
    invoke = [s for s in _statements(machine_role) if "lambda:invokefunction" in _actions(s)]
    targets = {json.dumps(r, sort_keys=True) for s in invoke for r in s["Resource"]}
    assert all(folders["dissect"] in t or folders["finalize"] in t for t in targets), targets


def test_kafka_event_sources_have_offset_lag_alarms(template: dict[str, Any]) -> None:
    sources = _resources(template, "AWS::Lambda::EventSourceMapping")
    assert sources
    lagged = {}
    for resource in _resources(template, "AWS::CloudWatch::Alarm").values():
        for ns, metric, value in _alarm_metrics(resource["Properties"]):
            if (ns, metric) == ("AWS/Lambda", "OffsetLag"):
                lagged[value["Ref"]] = resource
    for source in sources.values():
        function = source["Properties"]["FunctionName"]["Ref"]
        assert function in lagged, f"{function} consumes Kafka without an OffsetLag alarm"
        assert lagged[function]["Condition"] == "HasKafkaSource"
        assert lagged[function]["Properties"]["Threshold"] == {"Ref": "OffsetLagAlarmThreshold"}
        assert "DestinationConfig" in source["Properties"], "a Kafka source needs an on-failure destination"


def test_failed_dissections_alarm(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["DissectionExecutionsFailedAlarm"]["Properties"]
    metrics = {(ns, metric) for ns, metric, value in _alarm_metrics(alarm)
               if value == {"Ref": "DissectionStateMachine"}}
    assert {("AWS/States", "ExecutionsFailed"), ("AWS/States", "ExecutionsTimedOut")} <= metrics


def test_outputs_name_the_webhook_urls_and_the_buckets(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["WebhookUrl"]["Value"] == {"Fn::GetAtt": ["WebhookFunctionUrl", "FunctionUrl"]}
    assert "${WebhookHttpApi}.execute-api" in outputs["WebhookHttpApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["RawBucketName"]["Value"] == {"Ref": "RawBucket"}
    assert outputs["EvidenceBucketName"]["Value"] == {"Ref": "EvidenceBucket"}


def test_layers_keep_the_heavy_and_cluster_only_packages_out(template: dict[str, Any]) -> None:
    # kubernetes (123 MB), kafka-python and scapy serve the agent, local mode and the tests, never a function.
    for name, layer in _resources(template, "AWS::Serverless::LayerVersion").items():
        requirements = ROOT / layer["Properties"]["ContentUri"] / "requirements.txt"
        if (ROOT / layer["Properties"]["ContentUri"] / "Cargo.toml").is_file():
            # The compiled dissection core (layers/native): a Rust crate with no Python requirements at all.
            assert not requirements.exists() and layer["Metadata"]["BuildMethod"] == "makefile", name
            continue
        lines = [line.split("#")[0].strip().lower() for line in requirements.read_text(encoding="utf-8").splitlines()]
        packages = {re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0] for line in lines if line}
        assert packages, f"{name}: no requirements in {requirements}"
        assert not packages & {"kubernetes", "kafka-python", "scapy"}, (name, packages)
        # DuckDB (about 60 MB) only where the report runs: the query layer, which only finalize uses.
        assert "duckdb" not in packages or name == "QueryLayer", (name, packages)
    users = [name for name, function in _resources(template, *FUNCTION_TYPES).items()
             if {"Ref": "QueryLayer"} in function["Properties"].get("Layers", [])]
    assert users == [_function_folders(template)["finalize"]], users


def test_node_agents_may_only_upload_raw_segments(template: dict[str, Any]) -> None:
    policy = template["Resources"]["NodeAgentPolicy"]["Properties"]["PolicyDocument"]
    s3_grants = [s for s in _statements(policy) if any(a.startswith("s3:") for a in _actions(s))]
    assert s3_grants
    for statement in s3_grants:
        if _bucket_targets(statement) == [("RawBucket", "/jobs/*")]:  # recording jobs, locked for their retention
            assert set(_actions(statement)) <= {"s3:putobject", "s3:getobject", "s3:putobjectretention"}, statement
            continue
        assert set(_actions(statement)) <= {"s3:putobject", "s3:getobject"}, statement
        assert _bucket_targets(statement) == [("RawBucket", "/raw/*")], statement
    assert template["Outputs"]["NodeAgentPolicyArn"]["Value"] == {"Ref": "NodeAgentPolicy"}


# The IAM checks above must be able to fail: each mutation below breaks one promise, and its check must catch it.
_FREEZE_STATEMENTS = ("FreezeFunction", "Properties", "Policies", 0, "Statement")


def _with_statement(template: dict[str, Any], path: tuple[Any, ...], statement: dict[str, Any]) -> dict[str, Any]:
    import copy

    mutated = copy.deepcopy(template)
    node: Any = mutated["Resources"]
    for step in path:
        node = node[step]
    node.append(statement)
    return mutated


@pytest.mark.parametrize("check, path, statement", [
    (test_no_statement_grants_bypass_delete_or_wildcards, _FREEZE_STATEMENTS,
     {"Effect": "Allow", "Action": "s3:Delete*", "Resource": {"Fn::Sub": "${RawBucket.Arn}/raw/*"}}),
    (test_no_statement_grants_bypass_delete_or_wildcards, ("NodeAgentPolicy", "Properties", "PolicyDocument",
                                                           "Statement"),
     {"Effect": "Allow", "Action": "s3:BypassGovernanceRetention", "Resource": {"Fn::Sub": "${RawBucket.Arn}/raw/*"}}),
    (test_no_statement_grants_bypass_delete_or_wildcards, _FREEZE_STATEMENTS,
     {"Effect": "Allow", "Action": "s3:PutBucketObjectLock*", "Resource": {"Fn::GetAtt": ["RawBucket", "Arn"]}}),
    (test_no_bucket_grant_covers_a_whole_bucket, ("FinalizeFunction", "Properties", "Policies", 0, "Statement"),
     {"Effect": "Allow", "Action": "s3:GetObject", "Resource": {"Fn::Sub": "${EvidenceBucket.Arn}/*"}}),
    (test_no_bucket_grant_covers_a_whole_bucket, ("WebhookFunction", "Properties", "Policies", 0, "Statement"),
     {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}),
])
def test_the_iam_checks_catch_what_they_forbid(template: dict[str, Any], check: Any, path: tuple[Any, ...],
                                               statement: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        check(_with_statement(template, path, statement))


@pytest.mark.parametrize("action", LOCK_ACTIONS)
def test_the_lock_check_catches_a_third_locker(template: dict[str, Any], action: str) -> None:
    path = ("DissectionStateMachine", "Properties", "Policies", 0, "Statement")
    statement = {"Effect": "Allow", "Action": action, "Resource": {"Fn::Sub": "${EvidenceBucket.Arn}/incidents/*"}}
    with pytest.raises(AssertionError):
        test_nothing_else_in_the_stack_may_put_retention_or_legal_hold_anywhere(
            _with_statement(template, path, statement), action)


def test_every_function_starts_without_a_blas_thread_pool_or_huge_pages(template: dict[str, Any]) -> None:
    """The functions load pyarrow, hence numpy: its OpenBLAS pool would spin on every invocation's CPU, and pyarrow's
    mimalloc would zero fresh huge pages for transient buffers."""
    from freezeframe.contracts.config import PROCESS_DEFAULTS

    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert set(PROCESS_DEFAULTS) >= {"OPENBLAS_NUM_THREADS", "MIMALLOC_ALLOW_THP"}
    assert {name: env.get(name) for name in PROCESS_DEFAULTS} == PROCESS_DEFAULTS
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            own = resource["Properties"].get("Environment", {}).get("Variables", {})
            assert not set(own) & set(PROCESS_DEFAULTS), f"{name} overrides {set(own) & set(PROCESS_DEFAULTS)}"
