"""No function can switch a legal hold off: only the explicit release path (LegalHoldReleasePolicy, for operators
who run `freezeframe release-hold`) may, and only it may write the release markers that let a hold go.

The checks evaluate each policy of the template the way IAM does for one request (an explicit Deny wins, else an
Allow whose action, resource and conditions all match), with unknown condition operators read against the check:
an Allow they guard counts as granting, a Deny they guard as not denying. Each check has mutations below that
break the promise and must make it fail.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.deploy.test_template import TEMPLATE, _actions, _bucket_targets, _statements

RELEASE_POLICY = "LegalHoldReleasePolicy"
LEGAL_HOLD = "s3:object-lock-legal-hold"
RAW_SEGMENT = ("RawBucket", "/raw/prod/2026/12/05/12/node-a/1-2.pcap.zst")
RELEASE_MARKER = ("EvidenceBucket", "/legal-holds/" + "ab" * 32 + "/am-0123.released.json")
HOLD_REFERENCE = ("EvidenceBucket", "/legal-holds/" + "ab" * 32 + "/am-0123.json")
PRINCIPAL_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function", "AWS::Serverless::StateMachine",
                   "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::IAM::Role", "AWS::S3::BucketPolicy")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint import decode as cfnlint_decode

    parsed, matches = cfnlint_decode.decode(str(TEMPLATE))
    assert not matches and parsed is not None, [str(m) for m in matches]
    return dict(parsed)


def _policies(template: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(logical id, every statement of its policies) for each resource that grants or denies anything."""
    for name, resource in template["Resources"].items():
        if resource["Type"] in PRINCIPAL_TYPES:
            statements = list(_statements(resource.get("Properties", {})))
            if statements:
                yield name, statements


def _condition_holds(statement: dict[str, Any], context: dict[str, str], unknown: bool) -> bool:
    for operator, clauses in (statement.get("Condition") or {}).items():
        for key, expected in clauses.items():
            values = [str(v) for v in (expected if isinstance(expected, list) else [expected])]
            actual = context.get(key.lower())
            if operator == "StringEquals":
                ok = actual is not None and actual in values
            elif operator == "StringNotEquals":
                ok = actual is None or actual not in values
            elif operator == "StringLike":
                ok = actual is not None and any(fnmatch.fnmatchcase(actual, v) for v in values)
            elif operator.endswith("IfExists") and actual is None:
                ok = True
            else:
                ok = unknown
            if not ok:
                return False
    return True


def _matches(statement: dict[str, Any], action: str, target: tuple[str, str], context: dict[str, str],
             unknown: bool) -> bool:
    if not any(fnmatch.fnmatchcase(action, granted) for granted in _actions(statement)):
        return False
    bucket, key = target
    if not any(b in (bucket, "*") and (r == "*" or (r and fnmatch.fnmatchcase(key, r)))
               for b, r in _bucket_targets(statement)):
        return False
    return _condition_holds(statement, context, unknown)


def allowed(statements: list[dict[str, Any]], action: str, target: tuple[str, str],
            context: dict[str, str] | None = None) -> bool:
    """Whether these statements allow the request (an explicit Deny wins), read conservatively."""
    context = {k.lower(): v for k, v in (context or {}).items()}
    denied = any(s["Effect"] == "Deny" and _matches(s, action, target, context, unknown=False) for s in statements)
    return not denied and any(s["Effect"] == "Allow" and _matches(s, action, target, context, unknown=True)
                              for s in statements)


# ---------------------------------------------------------------- the promises

def test_no_function_or_other_policy_can_switch_a_legal_hold_off(template: dict[str, Any]) -> None:
    policies = dict(_policies(template))
    assert {"FreezeFunction", "SegmentIndexerFunction", RELEASE_POLICY} <= set(policies), "the walker is broken"
    for name, statements in policies.items():
        if name == RELEASE_POLICY:
            continue
        assert not allowed(statements, "s3:putobjectlegalhold", RAW_SEGMENT, {LEGAL_HOLD: "OFF"}), \
            f"{name} may switch a legal hold OFF"


def test_the_lockers_can_still_switch_legal_holds_on(template: dict[str, Any]) -> None:
    policies = dict(_policies(template))
    for name in ("FreezeFunction", "SegmentIndexerFunction"):
        assert allowed(policies[name], "s3:putobjectlegalhold", RAW_SEGMENT, {LEGAL_HOLD: "ON"}), name
        assert allowed(policies[name], "s3:putobject", HOLD_REFERENCE), f"{name} must write its hold references"


def test_only_the_release_path_may_write_release_markers(template: dict[str, Any]) -> None:
    for name, statements in _policies(template):
        if name != RELEASE_POLICY:
            assert not allowed(statements, "s3:putobject", RELEASE_MARKER), f"{name} may write a release marker"


def test_the_release_path_switches_holds_off_and_nothing_else_of_the_lock(template: dict[str, Any]) -> None:
    statements = dict(_policies(template))[RELEASE_POLICY]
    assert allowed(statements, "s3:putobjectlegalhold", RAW_SEGMENT, {LEGAL_HOLD: "OFF"})
    assert not allowed(statements, "s3:putobjectlegalhold", RAW_SEGMENT, {LEGAL_HOLD: "ON"})
    assert not allowed(statements, "s3:putobjectretention", RAW_SEGMENT)
    assert not allowed(statements, "s3:putobject", HOLD_REFERENCE), "it may not place references either"
    # What `freezeframe release-hold` reads and writes (freezeframe_local.cli._cmd_release_hold,
    # freezeframe.freeze.legal_hold).
    assert allowed(statements, "s3:putobject", RELEASE_MARKER)
    assert allowed(statements, "s3:getobject", ("EvidenceBucket", "/incidents/am-0123/manifest.json"))
    assert allowed(statements, "s3:getobject", ("EvidenceBucket", "/incidents/am-0123/manifest-parts/0001.json"))
    assert allowed(statements, "s3:getobject", HOLD_REFERENCE)


def test_the_release_path_is_attached_to_nothing_in_the_stack(template: dict[str, Any]) -> None:
    policy = template["Resources"][RELEASE_POLICY]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert not any(policy["Properties"].get(k) for k in ("Roles", "Users", "Groups")), "attached inside the stack"
    for name, resource in template["Resources"].items():
        if name != RELEASE_POLICY:
            assert RELEASE_POLICY not in repr(resource), f"{name} refers to {RELEASE_POLICY}"
    assert template["Outputs"]["LegalHoldReleasePolicyArn"]["Value"] == {"Ref": RELEASE_POLICY}


# ---------------------------------------------------------------- each check can fail

def _statements_of(mutated: dict[str, Any], name: str) -> list[dict[str, Any]]:
    resource = mutated["Resources"][name]
    if "PolicyDocument" in resource["Properties"]:
        return list(resource["Properties"]["PolicyDocument"]["Statement"])
    return list(resource["Properties"]["Policies"][0]["Statement"])


def _by_sid(mutated: dict[str, Any], name: str, sid: str) -> dict[str, Any]:
    [statement] = [s for s in _statements_of(mutated, name) if isinstance(s, dict) and s.get("Sid") == sid]
    return statement


def _append(name: str, statement: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(mutated: dict[str, Any]) -> None:
        resource = mutated["Resources"][name]["Properties"]
        document = resource["PolicyDocument"] if "PolicyDocument" in resource else resource["Policies"][0]
        document["Statement"].append(statement)
    return mutate


def _drop_condition(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda mutated: _by_sid(mutated, name, "PlaceLegalHoldsOnly").pop("Condition")


def _set_condition(name: str, sid: str, condition: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda mutated: _by_sid(mutated, name, sid).__setitem__("Condition", condition)


def _remove(name: str, sid: str) -> Callable[[dict[str, Any]], None]:
    def mutate(mutated: dict[str, Any]) -> None:
        statements = (mutated["Resources"][name]["Properties"]["Policies"][0]["Statement"])
        statements.remove(_by_sid(mutated, name, sid))
    return mutate


def _attach_release_policy(mutated: dict[str, Any]) -> None:
    mutated["Resources"][RELEASE_POLICY]["Properties"]["Roles"] = [{"Ref": "FreezeFunctionRole"}]


RAW = {"Fn::Sub": "${RawBucket.Arn}/raw/*"}
MUTATIONS = [
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off, _drop_condition("FreezeFunction")),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _set_condition("SegmentIndexerFunction", "PlaceLegalHoldsOnly", {"StringEquals": {LEGAL_HOLD: ["ON", "OFF"]}})),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _set_condition("FreezeFunction", "PlaceLegalHoldsOnly", {"StringLike": {LEGAL_HOLD: "*"}})),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _set_condition("FreezeFunction", "PlaceLegalHoldsOnly", {"ForAnyValue:StringEquals": {LEGAL_HOLD: "ON"}})),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _append("WebhookFunction", {"Effect": "Allow", "Action": "s3:PutObject*", "Resource": RAW})),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _append("NodeAgentPolicy", {"Effect": "Allow", "Action": "s3:PutObjectLegalHold", "Resource": RAW})),
    (test_no_function_or_other_policy_can_switch_a_legal_hold_off,
     _append("RawBucketPolicy", {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObjectLegalHold",
                                 "Resource": RAW})),
    (test_the_lockers_can_still_switch_legal_holds_on, _remove("FreezeFunction", "PlaceLegalHoldsOnly")),
    (test_only_the_release_path_may_write_release_markers,
     _remove("FreezeFunction", "NeverWriteLegalHoldReleases")),
    (test_only_the_release_path_may_write_release_markers,
     _remove("SegmentIndexerFunction", "NeverWriteLegalHoldReleases")),
    (test_only_the_release_path_may_write_release_markers,
     _append("FinalizeFunction", {"Effect": "Allow", "Action": "s3:PutObject",
                                  "Resource": {"Fn::Sub": "${EvidenceBucket.Arn}/legal-holds/*"}})),
    (test_the_release_path_switches_holds_off_and_nothing_else_of_the_lock,
     _set_condition(RELEASE_POLICY, "SwitchLegalHoldsOff", {"StringEquals": {LEGAL_HOLD: ["ON", "OFF"]}})),
    (test_the_release_path_switches_holds_off_and_nothing_else_of_the_lock,
     _append(RELEASE_POLICY, {"Effect": "Allow", "Action": "s3:PutObjectRetention", "Resource": RAW})),
    (test_the_release_path_is_attached_to_nothing_in_the_stack, _attach_release_policy),
]


@pytest.mark.parametrize(("check", "mutate"), MUTATIONS,
                         ids=[f"{check.__name__.removeprefix('test_')[:40]}-{index}"
                              for index, (check, _) in enumerate(MUTATIONS)])
def test_each_legal_hold_check_catches_its_mutation(template: dict[str, Any], check: Any, mutate: Any) -> None:
    check(template)  # passes on the template as it is
    mutated = copy.deepcopy(template)
    mutate(mutated)
    with pytest.raises(AssertionError):
        check(mutated)
