"""The Kubernetes watcher against a fake API server that replays recorded list/watch replies, publishing to a
FileBus. Expected values come from the recorded objects in tests/fixtures/k8s/ (and, for workloads, from reading
their ownerReferences by hand), never from the watcher's own output."""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import Configuration

from freezeframe.adapters.bus import FileBus
from freezeframe.contracts.config import K8S_TOPIC
from freezeframe_agent.k8s import EVENT_SCHEMA, POD_SCHEMA, K8sWatcher, workload_of
from tests.fixtures.k8s_api import FakeKubeApi, Reply, load, load_events

NODE = "ip-10-0-1-23.eu-west-1.compute.internal"
CLUSTER = "prod-eu"
KEY = f"{CLUSTER}/{NODE}"
TIMEOUT_S = 10.0

# The workload of every recorded pod, read by hand from its ownerReferences and pod-template-hash label.
WORKLOADS = {
    "aws-node-7kx9q": ("DaemonSet", "aws-node"),
    "cart-redis-0": ("StatefulSet", "cart-redis"),
    "checkout-6d9f7c8b5-x2k4p": ("Deployment", "checkout"),
    "checkout-6d9f7c8b5-m8w2r": ("Deployment", "checkout"),
    "checkout-6d9f7c8b5-q7n5t": ("Deployment", "checkout"),
    "debug-netshoot": ("Pod", "debug-netshoot"),
    "nightly-report-28598160-vz8ql": ("CronJob", "nightly-report"),
}


# -- helpers -----------------------------------------------------------------------------------------------------


def ips(pod: Mapping[str, Any]) -> list[str]:
    return [entry["ip"] for entry in pod["status"].get("podIPs", [])]


def name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def rv(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def ns_of(stamp: str) -> int:
    """RFC 3339 (Z, optional fraction) to ns, independently of the watcher's parser."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) * 10**9 + int(fraction.ljust(9, "0"))


def pods(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record["schema"] == POD_SCHEMA]


def events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record["schema"] == EVENT_SCHEMA]


def wait_records(bus: FileBus, predicate: Callable[[list[dict[str, Any]]], bool],
                 timeout_s: float = TIMEOUT_S) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    values: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        values = [record.value for record in bus.read(K8S_TOPIC)]
        if predicate(values):
            return values
        time.sleep(0.05)
    seen = [(value.get("change"), value.get("pod") or value.get("name")) for value in values]
    raise AssertionError(f"timed out; records so far: {seen}")


def watches(api: FakeKubeApi, resource: str) -> list[Any]:
    return [request for request in api.requests if request.resource == resource and request.watch]


def lists(api: FakeKubeApi, resource: str) -> list[Any]:
    return [request for request in api.requests if request.resource == resource and not request.watch]


def assert_pod_record(record: Mapping[str, Any], pod: Mapping[str, Any], change: str) -> None:
    assert record["schema"] == POD_SCHEMA
    assert (record["cluster"], record["node"]) == (CLUSTER, NODE)
    assert record["change"] == change
    assert (record["namespace"], record["pod"], record["uid"]) == (
        pod["metadata"]["namespace"], name(pod), pod["metadata"]["uid"])
    assert record["pod_ips"] == ips(pod)
    assert record["host_ip"] == pod["status"]["hostIP"]
    assert record["host_network"] is pod["spec"].get("hostNetwork", False)
    assert (record["workload_kind"], record["workload_name"]) == WORKLOADS[name(pod)]
    assert record["labels"] == pod["metadata"]["labels"]
    assert record["phase"] == pod["status"]["phase"]
    assert record["resource_version"] == rv(pod)


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    with FakeKubeApi(NODE, hold_s=30.0) as server:
        yield server


@pytest.fixture
def bus(tmp_path: Path) -> FileBus:
    return FileBus(tmp_path / "bus")


def watcher_for(api: FakeKubeApi, bus: Any, *, node: str = NODE, **options: Any) -> K8sWatcher:
    options = {"watch_events": False, "watch_objects": False, "backoff_base_s": 0.2, "backoff_max_s": 0.4, **options}
    return K8sWatcher(bus, cluster=CLUSTER, node=node, configuration=Configuration(host=api.url), **options)


@contextmanager
def running(watcher: K8sWatcher) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), name="watcher-under-test", daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT_S)
        watcher.close()
        assert not thread.is_alive(), "the watcher did not stop"


# -- the fixtures say what the tests rely on ---------------------------------------------------------------------


def test_recorded_fixtures_hold_the_cases_the_tests_rely_on() -> None:
    listed = load("pods-list.json")
    watched = load_events("pods-watch-1.jsonl")
    relisted = load("pods-list-relist.json")
    # cart-redis-0's MODIFIED changes only the timestamps of its conditions.
    before = next(pod for pod in listed["items"] if name(pod) == "cart-redis-0")
    after = next(event["object"] for event in watched if name(event["object"]) == "cart-redis-0")
    strip = {"conditions", "resourceVersion"}
    assert {k: v for k, v in before["status"].items() if k not in strip} == \
        {k: v for k, v in after["status"].items() if k not in strip}
    assert before["status"]["conditions"] != after["status"]["conditions"]
    # The nightly report pod vanishes during the 410 gap and a new replica reuses its IPv4 address.
    report = next(pod for pod in listed["items"] if name(pod) == "nightly-report-28598160-vz8ql")
    assert name(report) not in {name(pod) for pod in relisted["items"]}
    newcomer = next(pod for pod in relisted["items"] if name(pod) == "checkout-6d9f7c8b5-q7n5t")
    assert ips(report)[0] == ips(newcomer)[0]
    assert watched[-1]["type"] == "BOOKMARK"


# -- pods --------------------------------------------------------------------------------------------------------


def test_initial_list_publishes_a_sync_snapshot_of_this_node(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("pods-list.json")
    api.script("pods", lists=[Reply.list("pods-list.json")])
    before = time.time_ns()
    with running(watcher_for(api, bus)):
        records = wait_records(bus, lambda values: len(values) >= len(listed["items"]))
        api.wait_for(lambda requests: any(request.watch for request in requests))
    after = time.time_ns()

    assert len(records) == len(listed["items"])
    for record, pod in zip(records, listed["items"], strict=True):
        assert_pod_record(record, pod, "SYNC")
        assert record["snapshot_rv"] == rv(listed)
        assert record["snapshot_size"] == len(listed["items"])
        assert before <= record["observed_ns"] <= after
    assert {record.key for record in bus.read(K8S_TOPIC)} == {KEY}
    # Only this node's pods were asked for, and the watch starts where the list ended.
    assert {request.query.get("fieldSelector") for request in api.requests} == {f"spec.nodeName={NODE}"}
    watch = watches(api, "pods")[0]
    assert watch.resource_version == rv(listed)
    assert watch.query.get("allowWatchBookmarks") == "true"


def test_watch_publishes_ip_assignment_and_deletion_and_resumes_after_the_bookmark(api: FakeKubeApi,
                                                                                   bus: FileBus) -> None:
    listed = load("pods-list.json")
    watched = load_events("pods-watch-1.jsonl")
    api.script("pods", lists=[Reply.list("pods-list.json")], watches=[Reply.stream("pods-watch-1.jsonl")])
    # Every change but the condition-only update of cart-redis-0 and the bookmark is published.
    published = [event for event in watched if event["type"] != "BOOKMARK" and name(event["object"]) != "cart-redis-0"]
    with running(watcher_for(api, bus)):
        # The second watch request means the first stream was fully processed.
        api.wait_for(lambda requests: sum(request.watch for request in requests) >= 2)
        records = wait_records(bus, lambda values: len(values) >= len(listed["items"]) + len(published))

    changes = records[len(listed["items"]):]
    assert len(changes) == len(published)
    for record, event in zip(changes, published, strict=True):
        assert_pod_record(record, event["object"], event["type"])
        assert record["snapshot_rv"] is None
    added, assigned, deleted = changes
    assert (added["pod"], added["pod_ips"], added["phase"]) == ("checkout-6d9f7c8b5-m8w2r", [], "Pending")
    assert assigned["pod_ips"] == ips(watched[1]["object"]) and len(assigned["pod_ips"]) == 2  # IPv4 and IPv6
    assert (deleted["change"], deleted["pod_ips"]) == ("DELETED", ips(watched[3]["object"]))
    assert [request.resource_version for request in watches(api, "pods")[:2]] == [rv(listed), rv(watched[-1]["object"])]


def test_gone_relists_with_a_snapshot_infers_missed_deletions_and_continues(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("pods-list.json")
    watched = load_events("pods-watch-1.jsonl")
    relisted = load("pods-list-relist.json")
    after_relist = load_events("pods-watch-2.jsonl")
    api.script("pods", lists=[Reply.list("pods-list.json"), Reply.list("pods-list-relist.json")],
               watches=[Reply.stream("pods-watch-1.jsonl"), Reply.stream("watch-expired.jsonl"),
                        Reply.stream("pods-watch-2.jsonl")])
    # Pods known before the gap that the new list lacks: deleted while the watch was gone.
    known = {name(pod): pod for pod in listed["items"]}
    for event in watched:
        if event["type"] in ("ADDED", "MODIFIED"):
            known[name(event["object"])] = event["object"]
        elif event["type"] == "DELETED":
            known.pop(name(event["object"]))
    vanished = [pod for pod_name, pod in known.items() if pod_name not in {name(p) for p in relisted["items"]}]
    assert [name(pod) for pod in vanished] == ["nightly-report-28598160-vz8ql"]

    with running(watcher_for(api, bus)):
        api.wait_for(lambda requests: sum(request.watch for request in requests) >= 4)
        records = wait_records(bus, lambda values: any(
            v["change"] == "DELETED" and v["pod"] == name(after_relist[0]["object"]) for v in values))

    watch_requests = watches(api, "pods")
    assert [request.resource_version for request in watch_requests[:4]] == [
        rv(listed), rv(watched[-1]["object"]), rv(relisted), rv(after_relist[-1]["object"])]
    assert len(lists(api, "pods")) == 2
    assert lists(api, "pods")[1].at > watch_requests[1].at  # the re-list came after the expired watch

    relist_at = next(i for i, record in enumerate(records) if record["snapshot_rv"] == rv(relisted))
    inferred = records[relist_at:relist_at + len(vanished)]
    snapshot = records[relist_at + len(vanished):relist_at + len(vanished) + len(relisted["items"])]
    for record, pod in zip(inferred, vanished, strict=True):
        assert (record["change"], record["pod"], record["uid"]) == ("DELETED", name(pod), pod["metadata"]["uid"])
        assert record["pod_ips"] == ips(pod)
        assert record["snapshot_rv"] == rv(relisted)
    for record, pod in zip(snapshot, relisted["items"], strict=True):
        assert_pod_record(record, pod, "SYNC")
        assert (record["snapshot_rv"], record["snapshot_size"]) == (rv(relisted), len(relisted["items"]))
    # The freed IP is released before its new owner appears, so IP -> pod never has two owners at once.
    reused = ips(vanished[0])[0]
    new_owner = next(record for record in snapshot if reused in record["pod_ips"])
    assert new_owner["pod"] == "checkout-6d9f7c8b5-q7n5t"
    assert inferred[0]["observed_ns"] <= new_owner["observed_ns"]
    final = records[-1]
    assert_pod_record(final, after_relist[0]["object"], "DELETED")


def test_server_errors_back_off_then_recover(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("pods-list.json")
    watched = load_events("pods-watch-1.jsonl")
    api.script("pods", lists=[Reply.failure(500), Reply.list("pods-list.json")],
               watches=[Reply.failure(500), Reply.stream("pods-watch-1.jsonl")])
    base_s = 0.4  # equal jitter: every delay lies in [base/2, base]
    with running(watcher_for(api, bus, backoff_base_s=base_s, backoff_max_s=base_s)):
        api.wait_for(lambda requests: sum(request.watch for request in requests) >= 3)
        records = wait_records(bus, lambda values: any(v["change"] == "DELETED" for v in values))

    first_list, second_list = lists(api, "pods")[:2]
    failed_watch, resumed_watch = watches(api, "pods")[:2]
    assert (first_list.status, second_list.status, failed_watch.status, resumed_watch.status) == (500, 200, 500, 200)
    assert second_list.at - first_list.at >= base_s / 2
    assert resumed_watch.at - failed_watch.at >= base_s / 2
    # A failed watch resumes from the version it had, without a re-list.
    assert failed_watch.resource_version == resumed_watch.resource_version == rv(listed)
    assert [record["change"] for record in records] == ["SYNC"] * len(listed["items"]) + [
        event["type"] for event in watched if event["type"] != "BOOKMARK" and name(event["object"]) != "cart-redis-0"]


def test_stop_returns_promptly_while_a_watch_is_open(api: FakeKubeApi, bus: FileBus) -> None:
    api.script("pods", lists=[Reply.list("pods-list.json")])  # the watch then stays open with nothing to say
    api.script("events", lists=[Reply.list("events-list.json")])
    watcher = watcher_for(api, bus, watch_events=True)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    api.wait_for(lambda requests: len([r for r in requests if r.watch]) >= 2)
    started = time.monotonic()
    stop.set()
    thread.join(timeout=TIMEOUT_S)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0


def test_stop_interrupts_a_long_backoff(api: FakeKubeApi, bus: FileBus) -> None:
    api.script("pods", lists=[Reply.failure(500)])  # an exhausted list script repeats its last reply
    watcher = watcher_for(api, bus, backoff_base_s=60.0, backoff_max_s=60.0)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    api.wait_for(lambda requests: len(requests) >= 1)
    time.sleep(0.2)  # now inside the back-off
    started = time.monotonic()
    stop.set()
    thread.join(timeout=TIMEOUT_S)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert len(api.requests) == 1


def test_another_nodes_selector_gets_nothing(api: FakeKubeApi, bus: FileBus) -> None:
    # The fake server only serves spec.nodeName=<its node>; a watcher of another node is refused and retries.
    api.script("pods", lists=[Reply.list("pods-list.json")])
    with running(watcher_for(api, bus, node="ip-10-0-2-99.eu-west-1.compute.internal")):
        api.wait_for(lambda requests: len(requests) >= 2)
    assert {request.status for request in api.requests} == {400}
    assert bus.read(K8S_TOPIC) == []


# -- events ------------------------------------------------------------------------------------------------------


def test_events_list_watch_and_http_410_relist(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("events-list.json")
    watched = load_events("events-watch-1.jsonl")
    relisted = load("events-list-relist.json")
    api.script("pods", lists=[Reply.list("pods-list.json")])
    api.script("events", lists=[Reply.list("events-list.json"), Reply.list("events-list-relist.json")],
               watches=[Reply.stream("events-watch-1.jsonl"), Reply.failure(410)])
    # Expired events (DELETED) are not news; a re-list publishes only what is new or changed since.
    published_by_watch = [event for event in watched if event["type"] != "DELETED"]
    seen = {(e["metadata"]["uid"], rv(e)) for e in listed["items"]} | {
        (e["object"]["metadata"]["uid"], rv(e["object"])) for e in published_by_watch}
    new_on_relist = [e for e in relisted["items"] if (e["metadata"]["uid"], rv(e)) not in seen]
    assert 0 < len(new_on_relist) < len(relisted["items"])
    expected = [("SYNC", e) for e in listed["items"]] + [(e["type"], e["object"]) for e in published_by_watch] + [
        ("SYNC", e) for e in new_on_relist]

    with running(watcher_for(api, bus, watch_events=True)):
        api.wait_for(lambda requests: len([r for r in requests if r.resource == "events" and r.watch]) >= 3)
        records = events(wait_records(bus, lambda values: len(events(values)) >= len(expected)))

    assert len(records) == len(expected)
    for record, (change, event) in zip(records, expected, strict=True):
        assert record["schema"] == EVENT_SCHEMA
        assert (record["cluster"], record["node"], record["change"]) == (CLUSTER, NODE, change)
        assert (record["namespace"], record["name"], record["uid"]) == (
            event["metadata"]["namespace"], name(event), event["metadata"]["uid"])
        involved = event["involvedObject"]
        assert (record["involved_kind"], record["involved_namespace"], record["involved_name"],
                record["involved_uid"]) == (involved["kind"], involved["namespace"], involved["name"], involved["uid"])
        assert (record["reason"], record["type"], record["message"]) == (event["reason"], event["type"],
                                                                         event["message"])
        assert record["resource_version"] == rv(event)
        if event.get("count"):  # the legacy core/v1 shape
            assert record["count"] == event["count"]
            assert record["first_ns"] == ns_of(event["firstTimestamp"])
            assert record["last_ns"] == ns_of(event["lastTimestamp"])
        elif event.get("series"):  # written through events.k8s.io/v1: eventTime plus a series
            assert record["count"] == event["series"]["count"]
            assert record["first_ns"] == ns_of(event["eventTime"])
            assert record["last_ns"] == ns_of(event["series"]["lastObservedTime"])
        else:  # a singleton events.k8s.io/v1 event
            assert record["count"] == 1
            assert record["first_ns"] == record["last_ns"] == ns_of(event["eventTime"])
    event_watches = [r for r in api.requests if r.resource == "events" and r.watch]
    assert (event_watches[1].status, event_watches[1].resource_version) == (410, rv(watched[-1]["object"]))
    assert event_watches[2].resource_version == rv(relisted)
    assert all("fieldSelector" not in r.query for r in api.requests if r.resource == "events")


# -- the bus ------------------------------------------------------------------------------------------------------


class FlakyBus:
    """A FileBus whose first `failures` publishes raise, as a Kafka outage would."""

    def __init__(self, inner: FileBus, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    def publish(self, topic: str, key: str, value: Mapping[str, Any]) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError("broker unavailable")
        self.inner.publish(topic, key, value)

    def read(self, topic: str, timeout_s: float = 5.0) -> Any:
        return self.inner.read(topic, timeout_s)

    def close(self) -> None:
        self.inner.close()


def test_publish_is_retried_until_the_bus_takes_it(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("pods-list.json")
    api.script("pods", lists=[Reply.list("pods-list.json")])
    flaky = FlakyBus(bus, failures=2)
    with running(watcher_for(api, flaky, publish_attempts=3, backoff_base_s=0.05, backoff_max_s=0.1)):
        records = wait_records(bus, lambda values: len(values) >= len(listed["items"]))
    assert [record["pod"] for record in records] == [name(pod) for pod in listed["items"]]
    assert len(lists(api, "pods")) == 1  # recovered within the retries: no re-list needed


def test_a_record_the_bus_never_took_forces_a_relist(api: FakeKubeApi, bus: FileBus) -> None:
    listed = load("pods-list.json")
    api.script("pods", lists=[Reply.list("pods-list.json")])
    flaky = FlakyBus(bus, failures=3)
    with running(watcher_for(api, flaky, publish_attempts=2, backoff_base_s=0.05, backoff_max_s=0.1)):
        records = wait_records(bus, lambda values: {v["uid"] for v in values} >= {
            pod["metadata"]["uid"] for pod in listed["items"]})
    assert len(lists(api, "pods")) == 2  # the second snapshot covers the record that was lost
    assert [record["pod"] for record in records][-len(listed["items"]):] == [name(pod) for pod in listed["items"]]


# -- workloads of less common owners (inline objects; expected values read from them by hand) ---------------------


@pytest.mark.parametrize(("pod", "expected"), [
    pytest.param({"metadata": {"name": "kube-apiserver-cp-1", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "cp-1", "uid": "0e1f", "controller": True}]},
        "spec": {"nodeName": "cp-1"}}, ("StaticPod", "kube-apiserver"), id="static-pod-mirror"),
    pytest.param({"metadata": {"name": "legacy-rs-abcde", "labels": {"app": "legacy"}, "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "legacy-rs", "uid": "1a2b", "controller": True}]}},
        ("ReplicaSet", "legacy-rs"), id="bare-replicaset"),
    pytest.param({"metadata": {"name": "backup-20240516-x7k2p", "ownerReferences": [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "backup-20240516", "uid": "2b3c", "controller": True}]}},
        ("Job", "backup-20240516"), id="job-named-after-a-date"),
    pytest.param({"metadata": {"name": "web-0", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-a-controller", "uid": "3c4d"},
        {"apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet", "name": "web", "uid": "4d5e",
         "controller": True}]}}, ("StatefulSet", "web"), id="controller-owner-wins"),
])
def test_workload_of_less_common_owners(pod: dict[str, Any], expected: tuple[str, str]) -> None:
    assert workload_of(pod) == expected
