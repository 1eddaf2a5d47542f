"""template.yaml, the deploy path of issue 18: recording jobs' IAM and topic, the PagerDuty post-back's settings,
the archive account's replication, and frozen raw segments that tier instead of silently expiring.

cfn-lint (tests/unit/deploy/test_template.py) lints the template as a whole; here the archive branch is also linted with
its parameters set, since cfn-lint resolves conditions only partly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed")
ROOT = Path(__file__).resolve().parents[2].parent
TEMPLATE = ROOT / "template.yaml"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, matches = cfnlint_decode.decode(str(TEMPLATE))
    assert not matches and parsed is not None
    return parsed


def _statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("Sid") == sid:
                return node
            for value in node.values():
                if (found := walk(value)) is not None:
                    return found
        elif isinstance(node, list):
            for item in node:
                if (found := walk(item)) is not None:
                    return found
        return None

    found = walk(document)
    assert found is not None, f"no statement {sid}"
    return dict(found)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_node_agent_may_upload_and_lock_job_recordings_only_under_jobs(template: dict[str, Any]) -> None:
    policy = template["Resources"]["NodeAgentPolicy"]["Properties"]["PolicyDocument"]
    jobs = _statement(policy, "UploadAndLockJobRecordings")
    assert sorted(_list(jobs["Action"])) == ["s3:GetObject", "s3:PutObject", "s3:PutObjectRetention"]
    assert _list(jobs["Resource"]) == [{"Fn::Sub": "${RawBucket.Arn}/jobs/*"}]
    msk = _statement(policy, "PublishToMsk")
    topics = [r["Fn::Sub"] for r in _list(msk["Resource"]) if isinstance(r, dict) and "Fn::Sub" in r]
    assert {t.rsplit("/", 1)[1] for t in topics} == {"freezeframe.segments", "freezeframe.k8s", "freezeframe.jobs"}


def test_job_recordings_expire_by_the_raw_lifecycle(template: dict[str, Any]) -> None:
    rules = template["Resources"]["RawBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    whole_bucket = [r for r in rules if r["Status"] == "Enabled" and "ExpirationInDays" in r and "Prefix" not in r
                    and "Filter" not in r]
    assert whole_bucket, "jobs/ must fall under an expiry rule (S3 skips a version while its job lock holds)"


def test_frozen_raw_versions_tier_to_glacier_ir_instead_of_expiring(template: dict[str, Any]) -> None:
    rules = {r["Id"]: r for r in template["Resources"]["RawBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    rule = rules["ExpireUnfrozenSegments"]
    [transition] = rule["NoncurrentVersionTransitions"]
    assert transition["StorageClass"] == "GLACIER_IR"  # millisecond reads: verify and export keep working
    assert transition["TransitionInDays"] == {"Ref": "FrozenRawGlacierDays"}
    # Unfrozen noncurrent versions are gone after NoncurrentDays; the tier starts later, so it holds frozen ones only.
    assert template["Parameters"]["FrozenRawGlacierDays"]["MinValue"] > rule["NoncurrentVersionExpiration"][
        "NoncurrentDays"]
    consolidate = template["Parameters"]["ConsolidateSegments"]
    assert consolidate["Default"] == "true", "frozen packets must outlive the raw lock by default"


def test_pagerduty_post_back_settings_reach_freeze_and_finalize(template: dict[str, Any]) -> None:
    for name in ("FreezeFunction", "FinalizeFunction"):
        function = template["Resources"][name]["Properties"]
        variables = function["Environment"]["Variables"]
        assert variables["FREEZEFRAME_PAGERDUTY_API_TOKEN_SECRET_ARN"] == {"Ref": "PagerDutyApiTokenSecretArn"}
        assert variables["FREEZEFRAME_PAGERDUTY_FROM"] == {"Ref": "PagerDutyFrom"}
        read = _statement(function["Policies"], "ReadPagerDutyApiToken")
        assert read["Action"] == "secretsmanager:GetSecretValue"
        assert read["Resource"] == {"Ref": "PagerDutyApiTokenSecretArn"}
    webhook = template["Resources"]["WebhookFunction"]["Properties"]
    assert "FREEZEFRAME_PAGERDUTY_API_TOKEN_SECRET_ARN" not in webhook["Environment"]["Variables"]


def test_archive_replication_to_another_accounts_object_lock_bucket(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["EvidenceBucket"]["Properties"]
    condition, config, otherwise = bucket["ReplicationConfiguration"]["Fn::If"]
    assert condition == "UseArchive" and otherwise == {"Ref": "AWS::NoValue"}
    assert config["Role"] == {"Fn::GetAtt": ["ArchiveReplicationRole", "Arn"]}
    prefixes = set()
    for rule in config["Rules"]:
        destination = rule["Destination"]
        assert destination["Bucket"] == {"Ref": "ArchiveBucketArn"}
        assert destination["Account"] == {"Ref": "ArchiveAccountId"}
        assert destination["AccessControlTranslation"] == {"Owner": "Destination"}
        assert destination["EncryptionConfiguration"] == {"ReplicaKmsKeyID": {"Ref": "ArchiveKmsKeyArn"}}
        assert rule["DeleteMarkerReplication"] == {"Status": "Disabled"}  # a delete never reaches the archive
        assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"]["Status"] == "Enabled"
        prefixes.add(rule["Filter"]["Prefix"])
    assert {"incidents/", "tables/"} <= prefixes  # manifests, reports, consolidated raw segments and the tables
    freeze = template["Resources"]["FreezeFunction"]["Properties"]["Environment"]["Variables"]
    assert freeze["FREEZEFRAME_CONSOLIDATE"] == {"Fn::If": ["UseArchive", "true", {"Ref": "ConsolidateSegments"}]}
    role = template["Resources"]["ArchiveReplicationRole"]
    assert role["Condition"] == "UseArchive"
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    policy = template["Resources"]["ArchiveReplicationPolicy"]["Properties"]["PolicyDocument"]
    actions = {a.lower() for s in policy["Statement"] for a in _list(s["Action"])}
    assert {"s3:replicateobject", "s3:getobjectversionforreplication", "s3:getobjectretention",
            "s3:getobjectlegalhold", "kms:encrypt"} <= actions
    assert not {a for a in actions if "delete" in a or "bypass" in a}
    encrypt = _statement(policy, "EncryptReplicasWithArchiveKey")
    assert encrypt["Resource"] == {"Ref": "ArchiveKmsKeyArn"}


def test_archive_parameters_are_all_or_nothing(template: dict[str, Any]) -> None:
    rule = template["Rules"]["ArchiveNeedsAccountAndKey"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ArchiveBucketArn"}, ""]}]}
    assert template["Parameters"]["ArchiveAccountId"]["AllowedPattern"] == "^([0-9]{12})?$"


def test_archive_branch_lints_with_its_parameters_set(tmp_path: Path) -> None:
    """cfn-lint with the archive's parameters (and MSK) given: the replication branch itself must be valid."""
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    if not cfn_lint.exists():
        pytest.skip("cfn-lint is not installed")
    parameters = {
        "ArchiveBucketArn": "arn:aws:s3:::freezeframe-archive-444455556666",
        "ArchiveAccountId": "444455556666",
        "ArchiveKmsKeyArn": "arn:aws:kms:us-east-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "PagerDutyApiTokenSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:pd-api-AbCdEf",
        "KafkaSourceType": "MSK",
        "MskClusterArn": "arn:aws:kafka:us-east-1:111122223333:cluster/ff/abc-1"}
    result = subprocess.run([str(cfn_lint), "--parameters", *(f"{k}={v}" for k, v in parameters.items()), "--",
                             str(TEMPLATE)], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
