"""template.yaml keeps the custody promises (issue 14): the evidence is signed with an asymmetric KMS key that only
the functions writing signed documents may use to sign, and nothing else in the stack may write a signed document.
Each check comes with a mutation of the template that it must catch."""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

import pytest

from tests.unit.deploy.test_template import TEMPLATE, _actions, _bucket_targets, _function_folders, _grants, _statements

cfnlint_decode = pytest.importorskip("cfnlint.decode", reason="cfn-lint is not installed (pip install -e '.[dev]')")

# The functions with the authority to sign: what each writes and seals into the chain.
SIGNERS = {"freeze", "segment_indexer", "finalize"}
# Example keys of the signed documents, and who may write them (a grant is matched against each with fnmatch).
SIGNED_DOCUMENTS = {
    "/incidents/inc-1/manifest.json": {"freeze"},
    "/incidents/inc-1/manifest-parts/node-a-000000000007.json": {"segment_indexer"},
    "/incidents/inc-1/manifest-parts/node-a-000000000007": {"segment_indexer"},
    "/incidents/inc-1/chain/00000000.json": SIGNERS,
    "/incidents/inc-1/public-key.pem": SIGNERS,
    "/incidents/inc-1/summary.json": {"finalize"},
    "/incidents/inc-1/report.html": {"finalize"},
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    parsed, matches = cfnlint_decode.decode(str(TEMPLATE))
    assert not matches and parsed is not None, [str(m) for m in matches]
    return dict(parsed)


def _holders(template: dict[str, Any], action: str, match: Any) -> set[str]:
    """Every resource (function, state machine, managed policy...) with an Allow statement granting `action` on a
    resource `match` accepts, named by its function folder when it is a function."""
    by_logical = {logical: folder for folder, logical in _function_folders(template).items()}
    holders = set()
    for name, resource in template["Resources"].items():
        for statement in _statements(resource.get("Properties", {})):
            # A key policy's root statement (Principal: the account) only delegates to IAM policies.
            if (statement["Effect"] == "Allow" and "Principal" not in statement and _grants(statement, action)
                    and match(statement)):
                holders.add(by_logical.get(name, name))
    return holders


def test_the_signing_key_is_asymmetric_sign_verify_and_retained(template: dict[str, Any]) -> None:
    key = template["Resources"]["EvidenceSigningKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert (key["Properties"]["KeySpec"], key["Properties"]["KeyUsage"]) == ("ECC_NIST_P256", "SIGN_VERIFY")
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["FREEZEFRAME_SIGNING_KEY_ID"] == {"Ref": "EvidenceSigningKey"}
    assert env["FREEZEFRAME_TSA_URL"] == {"Ref": "TimeStampAuthorityUrl"}


def test_only_the_signing_functions_may_sign_and_only_with_the_signing_key(template: dict[str, Any]) -> None:
    signers = _holders(template, "kms:sign", lambda statement: True)
    assert signers == SIGNERS, f"kms:Sign: {sorted(signers)}, expected {sorted(SIGNERS)}"
    for statement in _statements(template):
        if statement["Effect"] == "Allow" and _grants(statement, "kms:sign") and "Principal" not in statement:
            assert statement["Resource"] == {"Fn::GetAtt": ["EvidenceSigningKey", "Arn"]}, statement


@pytest.mark.parametrize("document", sorted(SIGNED_DOCUMENTS))
def test_only_their_signing_function_may_write_signed_documents(template: dict[str, Any], document: str) -> None:
    def covers(statement: dict[str, Any]) -> bool:
        return any(bucket == "EvidenceBucket" and rest and fnmatch.fnmatchcase(document, rest)
                   for bucket, rest in _bucket_targets(statement))

    writers = _holders(template, "s3:putobject", covers)
    assert writers == SIGNED_DOCUMENTS[document], f"s3:PutObject on {document}: {sorted(writers)}"


def test_dissect_can_neither_sign_nor_write_the_manifest_area(template: dict[str, Any]) -> None:
    dissect = template["Resources"][_function_folders(template)["dissect"]]
    statements = [s for s in _statements(dissect["Properties"]["Policies"]) if s["Effect"] == "Allow"]
    assert statements, "the dissect function has no statements: the walker is broken"
    granted = {action for s in statements for action in _actions(s)}
    assert not {a for a in granted if fnmatch.fnmatchcase("kms:sign", a)}, granted
    writes = [rest for s in statements if _grants(s, "s3:putobject")
              for bucket, rest in _bucket_targets(s) if bucket == "EvidenceBucket"]
    # its status and work files, the tables' parts, and the view files its fold and compaction steps write (derived
    # from the parts, as finalize's are): never the manifest, the custody chain, the summary or incident.parquet
    assert sorted(writes) == ["/incidents/*/dissect/*", "/tables/*", "/views/*/bucket-*.parquet",
                              "/views/*/part-*.parquet"], writes


def _mutated(template: dict[str, Any], function: str, statement: dict[str, Any]) -> dict[str, Any]:
    mutated = copy.deepcopy(template)
    logical = _function_folders(mutated)[function]
    mutated["Resources"][logical]["Properties"]["Policies"][0]["Statement"].append(statement)
    return mutated


SIGN = {"Effect": "Allow", "Action": "kms:Sign", "Resource": {"Fn::GetAtt": ["EvidenceSigningKey", "Arn"]}}
WRITE_INCIDENTS = {"Effect": "Allow", "Action": "s3:PutObject",
                   "Resource": {"Fn::Sub": "${EvidenceBucket.Arn}/incidents/*"}}


@pytest.mark.parametrize("check, function, statement", [
    (test_only_the_signing_functions_may_sign_and_only_with_the_signing_key, "dissect", SIGN),
    (test_only_the_signing_functions_may_sign_and_only_with_the_signing_key, "webhook",
     {"Effect": "Allow", "Action": "kms:Sign", "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]}}),
    (test_only_the_signing_functions_may_sign_and_only_with_the_signing_key, "freeze",
     {"Effect": "Allow", "Action": "kms:Sign", "Resource": {"Fn::GetAtt": ["DataKey", "Arn"]}}),
    (test_dissect_can_neither_sign_nor_write_the_manifest_area, "dissect", SIGN),
    (test_dissect_can_neither_sign_nor_write_the_manifest_area, "dissect", WRITE_INCIDENTS),
    (test_dissect_can_neither_sign_nor_write_the_manifest_area, "dissect",
     {"Effect": "Allow", "Action": "kms:*", "Resource": {"Fn::GetAtt": ["EvidenceSigningKey", "Arn"]}}),
])
def test_the_custody_checks_catch_what_they_forbid(template: dict[str, Any], check: Any, function: str,
                                                   statement: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        check(_mutated(template, function, statement))


@pytest.mark.parametrize("document, function, resource", [
    ("/incidents/inc-1/manifest-parts/node-a-000000000007", "dissect", "${EvidenceBucket.Arn}/incidents/*"),
    ("/incidents/inc-1/chain/00000000.json", "webhook", "${EvidenceBucket.Arn}/incidents/*/chain/*"),
    ("/incidents/inc-1/manifest.json", "finalize", "${EvidenceBucket.Arn}/incidents/*/manifest*"),
])
def test_the_writer_check_catches_a_new_writer(template: dict[str, Any], document: str, function: str,
                                               resource: str) -> None:
    statement = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": {"Fn::Sub": resource}}
    with pytest.raises(AssertionError):
        test_only_their_signing_function_may_write_signed_documents(_mutated(template, function, statement),
                                                                     document)


def test_finalize_may_write_and_read_the_views_it_builds(template: dict[str, Any]) -> None:
    from freezeframe.contracts.keys import view_key

    view = "/" + view_key("connections", "2025-11-21", "inc-1")

    def covers(statement: dict[str, Any]) -> bool:
        return any(bucket == "EvidenceBucket" and rest and fnmatch.fnmatchcase(view, rest)
                   for bucket, rest in _bucket_targets(statement))

    # finalize writes the views (freezeframe.dissect.views) and its report reads them; nothing else writes them (the
    # dissect function's fold writes only bucket-<b> and part-<g> files).
    assert _holders(template, "s3:putobject", covers) == {"finalize"}
    assert "finalize" in _holders(template, "s3:getobject", covers)
