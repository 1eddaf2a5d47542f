"""plan_freeze: everything a freeze decides before it touches the store. Pure, so no store is involved.

Expected values come from the definitions, written out by hand: the raw layout is `raw/<cluster>/Y/M/D/H/<node>/`
(README, architecture sketch); a freeze lists each hour its window touches plus the hour before, because a segment that
began then may overlap the window's start (README, functions table: "list the window's hour prefixes (plus the hour
before)"); a scope that names nodes lists only their folders; a hold opens when the window's end plus the hold grace
is still ahead, and closes then; a namespace/pod scope that names no nodes takes its nodes from the Kubernetes
context (issue 12 item 4, the README's scope section)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope
from freezeframe.freeze.freeze import FreezePlan, plan_freeze

RETAIN = datetime(2026, 4, 5, tzinfo=UTC)
LOCK = LockSpec("COMPLIANCE", RETAIN)
START = datetime(2026, 3, 5, 10, 30, tzinfo=UTC)
END = datetime(2026, 3, 5, 10, 45, tzinfo=UTC)
LONG_AFTER = datetime(2026, 3, 6, tzinfo=UTC)  # the window and any grace are long over


def request(start: datetime = START, end: datetime = END, scope: Scope | None = None,
            lock: LockSpec = LOCK) -> FreezeRequest:
    return FreezeRequest(incident_id="inc-plan-1", source="manual", title="plan", severity="critical",
                         window_start=start, window_end=end, scope=scope or Scope(cluster="prod"), lock=lock,
                         received_at=start)


def ns(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000_000


def test_the_plan_lists_the_windows_hour_and_the_hour_before() -> None:
    plan = plan_freeze(request(), Settings(), LONG_AFTER)
    assert plan.incident_id == "inc-plan-1"
    assert plan.manifest_key == "incidents/inc-plan-1/manifest.json"
    assert plan.cluster == "prod"
    assert (plan.window_start_ns, plan.window_end_ns) == (ns(START), ns(END))
    assert plan.hour_prefixes == ("raw/prod/2026/03/05/09/", "raw/prod/2026/03/05/10/")
    assert plan.prefixes(plan.nodes) == plan.hour_prefixes  # no nodes named: every node's folders


def test_a_window_across_midnight_lists_every_hour_it_touches() -> None:
    plan = plan_freeze(request(datetime(2026, 3, 5, 23, 50, tzinfo=UTC), datetime(2026, 3, 6, 1, 5, tzinfo=UTC)),
                       Settings(), LONG_AFTER)
    assert plan.hour_prefixes == ("raw/prod/2026/03/05/22/", "raw/prod/2026/03/05/23/", "raw/prod/2026/03/06/00/",
                                  "raw/prod/2026/03/06/01/")


def test_a_window_ending_on_the_hour_includes_that_hour() -> None:
    # The window's end is inclusive: a segment starting exactly at 11:00:00 overlaps it, and lives in hour 11.
    plan = plan_freeze(request(end=datetime(2026, 3, 5, 11, 0, tzinfo=UTC)), Settings(), LONG_AFTER)
    assert plan.hour_prefixes == ("raw/prod/2026/03/05/09/", "raw/prod/2026/03/05/10/", "raw/prod/2026/03/05/11/")


def test_a_scope_naming_nodes_lists_only_their_folders() -> None:
    plan = plan_freeze(request(scope=Scope(cluster="prod", nodes=("node-a", "node-b"))), Settings(), LONG_AFTER)
    assert plan.nodes == ("node-a", "node-b")
    assert not plan.nodes_from_context
    assert plan.prefixes(plan.nodes) == ("raw/prod/2026/03/05/09/node-a/", "raw/prod/2026/03/05/09/node-b/",
                                         "raw/prod/2026/03/05/10/node-a/", "raw/prod/2026/03/05/10/node-b/")


@pytest.mark.parametrize(("scope", "from_context"), [
    (Scope(cluster="prod", namespaces=("payments",)), True),
    (Scope(cluster="prod", pods=("api-7f9",)), True),
    (Scope(cluster="prod", nodes=("node-a",), namespaces=("payments",)), False),  # named nodes win
    (Scope(cluster="prod"), False),  # nothing narrows it: every node
])
def test_only_a_namespace_or_pod_scope_without_nodes_takes_its_nodes_from_the_context(scope: Scope,
                                                                                       from_context: bool) -> None:
    plan = plan_freeze(request(scope=scope), Settings(), LONG_AFTER)
    assert plan.nodes_from_context is from_context
    assert (plan.namespaces, plan.pods) == (scope.namespaces, scope.pods)


def test_a_hold_opens_while_the_window_plus_grace_is_ahead_and_closes_then() -> None:
    settings = Settings(hold_grace_s=600)
    during = plan_freeze(request(), settings, datetime(2026, 3, 5, 10, 40, tzinfo=UTC))
    assert during.hold is not None
    assert during.hold.closes_at == datetime(2026, 3, 5, 10, 55, tzinfo=UTC)  # 10:45 + 600 s
    assert (during.hold.incident_id, during.hold.cluster) == ("inc-plan-1", "prod")
    assert (during.hold.window_start_ns, during.hold.window_end_ns) == (ns(START), ns(END))
    assert during.settle_retry_first  # a retry must not open a second hold
    within_grace = plan_freeze(request(), settings, datetime(2026, 3, 5, 10, 54, 59, tzinfo=UTC))
    assert within_grace.hold is not None
    at_close = plan_freeze(request(), settings, datetime(2026, 3, 5, 10, 55, tzinfo=UTC))
    assert at_close.hold is None
    assert not at_close.settle_retry_first  # no hold, no legal hold: the retry check runs beside the listing


def test_a_legal_hold_settles_the_retry_first_and_the_lock_is_the_requests() -> None:
    lock = LockSpec("GOVERNANCE", RETAIN, legal_hold=True)
    plan = plan_freeze(request(lock=lock), Settings(), LONG_AFTER)
    assert plan.lock == lock
    assert plan.hold is None
    assert plan.settle_retry_first


def test_consolidation_follows_the_setting() -> None:
    assert plan_freeze(request(), Settings(consolidate=True), LONG_AFTER).consolidate
    assert not plan_freeze(request(), Settings(), LONG_AFTER).consolidate


def test_bad_names_are_refused_while_planning_before_any_store_request() -> None:
    with pytest.raises(PayloadError, match="cluster"):
        plan_freeze(request(scope=Scope(cluster="prod/../other")), Settings(), LONG_AFTER)
    with pytest.raises(PayloadError, match="incident_id"):
        plan_freeze(dataclasses.replace(request(), incident_id="a/b"), Settings(), LONG_AFTER)


def test_the_plan_is_frozen_and_the_same_inputs_give_the_same_plan() -> None:
    plan = plan_freeze(request(), Settings(), LONG_AFTER)
    assert isinstance(plan, FreezePlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.cluster = "other"  # type: ignore[misc]
    assert plan_freeze(request(), Settings(), LONG_AFTER) == plan


def test_the_window_math_matches_the_hour_before_rule_for_a_window_at_the_start_of_an_hour() -> None:
    # 10:00:00 to 10:00:05: hours 09 (the hour before) and 10; nothing from hour 11.
    plan = plan_freeze(request(datetime(2026, 3, 5, 10, tzinfo=UTC), datetime(2026, 3, 5, 10, 0, 5, tzinfo=UTC)),
                       Settings(), LONG_AFTER)
    assert plan.hour_prefixes == ("raw/prod/2026/03/05/09/", "raw/prod/2026/03/05/10/")
