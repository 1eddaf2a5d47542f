"""Kubernetes context for the captures: which pod (and workload) held which IP on this node and when, plus the
cluster's events, published to the bus topic `freezeframe.k8s` with the key `<cluster>/<node>`.

The official client lists, then watches, the pods of this node (fieldSelector `spec.nodeName=<node>`), the
core/v1 events of all namespaces, and (freezeframe_agent.k8s_objects) the cluster's Services and EndpointSlices and
this node's Node object. Each watch resumes from the last resourceVersion it processed. A 410 Gone, which
the client raises as `ApiException(status=410)` both for an HTTP 410 and for a watch ERROR event with code 410,
forces a re-list: the list is published as a SYNC snapshot, and pods that vanished during the gap as DELETED, so an
IP's owner can still be resolved at any time. Other failures back off with jitter up to a bounded maximum.

Publishing is at-least-once: each record is retried, and one that still fails forces a re-list whose snapshot
covers it. Consumers deduplicate on (uid, resource_version, change).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes import watch as kube_watch
from kubernetes.client.exceptions import ApiException

from freezeframe.adapters.bus import SegmentBus
from freezeframe.contracts.config import K8S_TOPIC, Settings
from freezeframe.contracts.documents import K8S_EVENT_SCHEMA as EVENT_SCHEMA  # noqa: F401 - re-exported
from freezeframe.contracts.documents import K8S_POD_SCHEMA as POD_SCHEMA  # noqa: F401 - re-exported
from freezeframe.contracts.documents import EventRecord as EventRecord
from freezeframe.contracts.documents import PodRecord as PodRecord
from freezeframe.contracts.errors import ConfigError, FreezeframeError
from freezeframe_agent.k8s_objects import ENDPOINTSLICE_SCHEMA, NODE_SCHEMA, SERVICE_SCHEMA, ObjectRecord, object_record

logger = logging.getLogger(__name__)

GONE = 410
WATCH_CHANGES = ("ADDED", "MODIFIED", "DELETED")
MAX_LIST_PAGES = 10_000

# The CronJob controller names its Jobs <cronjob>-<scheduled time in Unix minutes>. Only values between 2015 and
# 2100 count, so a Job named after a date (backup-20240516) is not mistaken for one.
_CRONJOB_JOB = re.compile(r"^(?P<cronjob>.+)-(?P<minutes>\d{8,9})$")
_CRONJOB_MINUTES = (23_667_840, 68_401_440)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RawObject = Mapping[str, Any]  # a Kubernetes object as the API server sent it (JSON)


class PublishError(FreezeframeError):
    """A record could not be put on the bus after every retry; the watcher re-lists to cover it."""


class ListError(FreezeframeError):
    """A list reply was unusable (no resourceVersion, or pages that never end)."""


# -- records (pure: raw JSON in, record out) ---------------------------------------------------------------------


def rfc3339_ns(value: str | None) -> int | None:
    """Nanoseconds since the epoch of a Kubernetes Time or MicroTime ("2024-05-16T20:09:31.204117Z")."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def workload_of(pod: RawObject) -> tuple[str, str]:
    """(kind, name) of the workload that runs `pod`, from its controlling owner reference."""
    meta = pod.get("metadata") or {}
    name = meta.get("name") or ""
    owners = meta.get("ownerReferences") or []
    owner = next((ref for ref in owners if ref.get("controller")), owners[0] if owners else None)
    if owner is None:
        return "Pod", name
    kind, owner_name = owner.get("kind") or "", owner.get("name") or ""
    if kind == "ReplicaSet":
        # A Deployment names its ReplicaSets <deployment>-<pod-template-hash> and labels their pods with the hash.
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if template_hash and owner_name.endswith(f"-{template_hash}"):
            return "Deployment", owner_name[: -len(template_hash) - 1]
        return "ReplicaSet", owner_name
    if kind == "Job":
        match = _CRONJOB_JOB.match(owner_name)
        if match and _CRONJOB_MINUTES[0] <= int(match["minutes"]) < _CRONJOB_MINUTES[1]:
            return "CronJob", match["cronjob"]
        return "Job", owner_name
    if kind == "Node":
        # A static pod's mirror: the kubelet names it <manifest name>-<node name>.
        suffix = f"-{(pod.get('spec') or {}).get('nodeName') or owner_name}"
        return "StaticPod", name[: -len(suffix)] if name.endswith(suffix) else name
    return kind, owner_name


def pod_ips(pod: RawObject) -> tuple[str, ...]:
    status = pod.get("status") or {}
    ips = tuple(entry["ip"] for entry in status.get("podIPs") or [] if entry.get("ip"))
    if not ips and status.get("podIP"):
        ips = (status["podIP"],)
    return ips


def pod_record(pod: RawObject, *, cluster: str, node: str, change: str, observed_ns: int,
               snapshot_rv: str | None = None, snapshot_size: int | None = None) -> PodRecord:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    kind, workload = workload_of(pod)
    return PodRecord(
        cluster=cluster, node=node, observed_ns=observed_ns, change=change,
        namespace=meta.get("namespace") or "", pod=meta.get("name") or "", uid=meta.get("uid") or "",
        pod_ips=pod_ips(pod), host_ip=status.get("hostIP"), host_network=bool(spec.get("hostNetwork")),
        workload_kind=kind, workload_name=workload, labels=dict(meta.get("labels") or {}),
        phase=status.get("phase"), resource_version=meta.get("resourceVersion"),
        snapshot_rv=snapshot_rv, snapshot_size=snapshot_size,
    )


def event_record(event: RawObject, *, cluster: str, node: str, change: str, observed_ns: int) -> EventRecord:
    meta = event.get("metadata") or {}
    involved = event.get("involvedObject") or {}
    series = event.get("series") or {}
    source = event.get("source") or {}
    # Events written through events.k8s.io/v1 carry eventTime and series instead of the legacy count and
    # first/lastTimestamp; the legacy fields win when both are present.
    first = event.get("firstTimestamp") or event.get("eventTime")
    last = event.get("lastTimestamp") or series.get("lastObservedTime") or event.get("eventTime") or first
    return EventRecord(
        cluster=cluster, node=node, observed_ns=observed_ns, change=change,
        namespace=meta.get("namespace") or "", name=meta.get("name") or "", uid=meta.get("uid") or "",
        involved_kind=involved.get("kind"), involved_namespace=involved.get("namespace"),
        involved_name=involved.get("name"), involved_uid=involved.get("uid"),
        reason=event.get("reason"), type=event.get("type"), message=event.get("message"),
        count=int(event.get("count") or series.get("count") or 1),
        first_ns=rfc3339_ns(first), last_ns=rfc3339_ns(last),
        reporting_component=event.get("reportingComponent") or source.get("component") or None,
        reporting_instance=event.get("reportingInstance") or source.get("host") or None,
        resource_version=meta.get("resourceVersion"),
    )


# -- the watcher (talks to the Kubernetes API and the bus) -------------------------------------------------------


@dataclass(slots=True)
class _Feed:
    """One list-then-watch loop and the resourceVersion it resumes from (None: list first)."""

    name: str
    list_func: Callable[..., Any]
    field_selector: str | None
    on_list: Callable[[list[RawObject], str, threading.Event], None]
    on_change: Callable[[str, RawObject, threading.Event], None]
    resource_version: str | None = None
    watch: Any = None  # the kubernetes.watch.Watch streaming right now, so `run` can interrupt it


class K8sWatcher:
    """Lists and watches this node's pods (and the cluster's events) and publishes them to the bus.

    `run(stop)` blocks until `stop` is set, one thread per feed; the API client comes from `api_client`, else from
    `configuration`, else from the pod's service account (`load_incluster_config`).
    """

    def __init__(self, bus: SegmentBus, *, cluster: str, node: str,
                 api_client: kube_client.ApiClient | None = None,
                 configuration: kube_client.Configuration | None = None,
                 topic: str = K8S_TOPIC, watch_events: bool = True, watch_objects: bool = True,
                 watch_timeout_s: int = 300, connect_timeout_s: float = 10.0, list_timeout_s: float = 60.0,
                 page_size: int = 500, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 min_watch_s: float = 1.0, publish_attempts: int = 5, stop_timeout_s: float = 10.0,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        if not node:
            raise ConfigError("the Kubernetes watcher needs the node name (NODE_NAME from the downward API)")
        if watch_timeout_s < 1:
            raise ConfigError(f"the watch timeout must be at least 1 s, got {watch_timeout_s}")
        if backoff_base_s <= 0 or backoff_max_s < backoff_base_s:
            raise ConfigError(f"backoff must satisfy 0 < base <= max, got {backoff_base_s} and {backoff_max_s}")
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.topic = topic
        self.key = f"{cluster}/{node}"
        self.watch_timeout_s = watch_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.list_timeout_s = list_timeout_s
        self.page_size = page_size
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.min_watch_s = min_watch_s
        self.publish_attempts = publish_attempts
        self.stop_timeout_s = stop_timeout_s
        self._clock_ns = clock_ns
        self._owns_api = api_client is None
        self._api = api_client or kube_client.ApiClient(configuration or _in_cluster_configuration())
        core = kube_client.CoreV1Api(self._api)
        self._feeds = [_Feed("pods", core.list_pod_for_all_namespaces, f"spec.nodeName={node}",
                             self._on_pod_list, self._on_pod_change)]
        if watch_events:
            self._feeds.append(_Feed("events", core.list_event_for_all_namespaces, None,
                                     self._on_event_list, self._on_event_change))
        self._objects: dict[str, dict[str, ObjectRecord]] = {}  # schema -> uid -> last published state
        if watch_objects:
            # The cluster's Services and EndpointSlices (what a ClusterIP meant and which backends were ready), and
            # this agent's own Node (its readiness and conditions).
            discovery = kube_client.DiscoveryV1Api(self._api)
            for name, list_func, selector, schema in (
                    ("services", core.list_service_for_all_namespaces, None, SERVICE_SCHEMA),
                    ("endpointslices", discovery.list_endpoint_slice_for_all_namespaces, None, ENDPOINTSLICE_SCHEMA),
                    ("nodes", core.list_node, f"metadata.name={node}", NODE_SCHEMA)):
                self._objects[schema] = {}
                self._feeds.append(_Feed(name, list_func, selector, functools.partial(self._on_object_list, schema),
                                         functools.partial(self._on_object_change, schema)))
        self._pods: dict[str, PodRecord] = {}  # uid -> last known state, to infer deletions on a re-list
        self._events: dict[str, str | None] = {}  # uid -> resourceVersion published, to skip repeats on a re-list
        self._publish_lock = threading.Lock()
        self._feeds_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, bus: SegmentBus, **kwargs: Any) -> K8sWatcher:
        return cls(bus, cluster=settings.cluster, node=settings.node_name, **kwargs)

    def run(self, stop: threading.Event) -> None:
        """Lists and watches until `stop` is set, then interrupts the open watches and returns."""
        threads = [threading.Thread(target=self._loop, args=(feed, stop), name=f"k8s-{feed.name}", daemon=True)
                   for feed in self._feeds]
        for thread in threads:
            thread.start()
        stop.wait()
        deadline = time.monotonic() + self.stop_timeout_s
        # Repeated: a watch that opens its stream just after one interrupt is caught by the next.
        while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
            self._interrupt_watches()
            for thread in threads:
                thread.join(timeout=0.05)
        stuck = [thread.name for thread in threads if thread.is_alive()]
        if stuck:
            logger.warning("kubernetes watch threads still busy at stop", extra={"node": self.node,
                                                                                  "threads": stuck})

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits for a publish in flight. Publishing is synchronous (the Kafka bus waits for the broker's ack), so
        once this returns True every record handed to the bus has been acknowledged."""
        if not self._publish_lock.acquire(timeout=timeout_s):
            return False
        self._publish_lock.release()
        return True

    def close(self) -> None:
        """Closes the API client's connection pool if this watcher created it."""
        if self._owns_api:
            self._api.close()

    # -- list and watch ------------------------------------------------------------------------------------------

    def _loop(self, feed: _Feed, stop: threading.Event) -> None:
        failures = 0
        while not stop.is_set():
            listing = feed.resource_version is None
            try:
                if listing:
                    self._list(feed, stop)
                started = time.monotonic()
                seen = self._watch(feed, stop)
                if stop.is_set():
                    break
                if seen or time.monotonic() - started >= self.min_watch_s:
                    failures = 0
                    continue
                failure = "watch closed at once without events"  # do not spin on a server or proxy that does so
            except ApiException as exc:
                if stop.is_set():
                    break
                if exc.status == GONE and not listing:
                    logger.info("resource version expired, re-listing",
                                extra={"node": self.node, "feed": feed.name, "rv": feed.resource_version})
                    feed.resource_version = None
                    continue
                failure = f"HTTP {exc.status} {exc.reason}"
            except PublishError as exc:
                feed.resource_version = None  # the next snapshot covers what could not be published
                failure = str(exc)
            except (urllib3.exceptions.HTTPError, OSError, ValueError, ListError) as exc:
                if stop.is_set():
                    break  # the stream was interrupted on purpose
                failure = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # noqa: BLE001 - the watcher outlives one bad reply; logged with its traceback
                logger.exception("kubernetes watch failed unexpectedly", extra={"node": self.node, "feed": feed.name})
                failure = type(exc).__name__
            failures += 1
            delay = self._backoff(failures)
            logger.warning("kubernetes watch backing off", extra={"node": self.node, "feed": feed.name,
                                                                   "failure": failure, "attempt": failures,
                                                                   "delay_s": round(delay, 3)})
            stop.wait(delay)

    def _list(self, feed: _Feed, stop: threading.Event) -> None:
        items: list[RawObject] = []
        resource_version: str | None = None
        continue_token: str | None = None
        for _ in range(MAX_LIST_PAGES):
            kwargs: dict[str, Any] = {"limit": self.page_size, "_preload_content": False,
                                      "_request_timeout": (self.connect_timeout_s, self.list_timeout_s)}
            if feed.field_selector:
                kwargs["field_selector"] = feed.field_selector
            if continue_token:
                kwargs["_continue"] = continue_token
            response = feed.list_func(**kwargs)
            try:
                body = json.loads(response.data)
            finally:
                response.release_conn()
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            resource_version = resource_version or meta.get("resourceVersion")
            continue_token = meta.get("continue")
            if not continue_token:
                break
        else:
            raise ListError(f"{feed.name} list did not end after {MAX_LIST_PAGES} pages")
        if not resource_version:
            raise ListError(f"{feed.name} list reply has no resourceVersion")
        feed.on_list(items, resource_version, stop)
        feed.resource_version = resource_version
        logger.info("kubernetes list published", extra={"node": self.node, "feed": feed.name, "items": len(items),
                                                         "rv": resource_version})

    def _watch(self, feed: _Feed, stop: threading.Event) -> int:
        """One watch request from `feed.resource_version` until the server ends it; returns the events seen."""
        # return_type "object" keeps each event's object as the JSON dict the server sent (no model classes), and
        # timeout_seconds turns off the client's own silent retry, so this loop sees every 410 and every end.
        watch = kube_watch.Watch(return_type="object")
        with self._feeds_lock:
            if stop.is_set():
                return 0
            feed.watch = watch
        timeout_s = random.randint(self.watch_timeout_s, 2 * self.watch_timeout_s)  # noqa: S311 - spread, not crypto
        kwargs: dict[str, Any] = {"resource_version": feed.resource_version, "allow_watch_bookmarks": True,
                                  "timeout_seconds": timeout_s,
                                  "_request_timeout": (self.connect_timeout_s, timeout_s + self.list_timeout_s)}
        if feed.field_selector:
            kwargs["field_selector"] = feed.field_selector
        seen = 0
        stream: Generator[dict[str, Any], None, None] = watch.stream(feed.list_func, **kwargs)
        try:
            for event in stream:
                if stop.is_set():
                    break
                raw = event["raw_object"]
                if event["type"] in WATCH_CHANGES:
                    feed.on_change(event["type"], raw, stop)
                # Only after the record is on the bus: a restart resumes from here (BOOKMARKs just move it on).
                feed.resource_version = (raw.get("metadata") or {}).get("resourceVersion") or feed.resource_version
                seen += 1
        finally:
            with self._feeds_lock:
                feed.watch = None
            stream.close()  # runs the client's own cleanup, which releases the connection
        return seen

    def _interrupt_watches(self) -> None:
        with self._feeds_lock:
            for feed in self._feeds:
                if feed.watch is not None:
                    feed.watch.stop()  # shuts the socket down, so a blocked read returns at once

    def _backoff(self, failures: int) -> float:
        """Exponential with equal jitter: at least half the ceiling, so a retry never comes at once."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not crypto

    # -- records to the bus --------------------------------------------------------------------------------------

    def _on_pod_list(self, items: list[RawObject], resource_version: str, stop: threading.Event) -> None:
        now = self._clock_ns()
        snapshot = [pod_record(item, cluster=self.cluster, node=self.node, change="SYNC", observed_ns=now,
                               snapshot_rv=resource_version, snapshot_size=len(items)) for item in items]
        present = {record.uid for record in snapshot}
        # Deletions missed during the gap go first, so an IP they freed never looks held twice.
        for uid, known in list(self._pods.items()):
            if uid not in present:
                self._publish(replace(known, change="DELETED", observed_ns=now, snapshot_rv=resource_version,
                                      snapshot_size=len(items)).to_dict(), stop)
                del self._pods[uid]
        for record in snapshot:
            self._publish(record.to_dict(), stop)
            self._pods[record.uid] = record

    def _on_pod_change(self, change: str, raw: RawObject, stop: threading.Event) -> None:
        record = pod_record(raw, cluster=self.cluster, node=self.node, change=change, observed_ns=self._clock_ns())
        known = self._pods.get(record.uid)
        if change == "DELETED":
            if not record.pod_ips and known is not None:
                record = replace(record, pod_ips=known.pod_ips)  # the IPs it held until now
            self._publish(record.to_dict(), stop)
            self._pods.pop(record.uid, None)
            return
        if change == "MODIFIED" and known is not None and known.same_state(record):
            self._pods[record.uid] = record  # a newer resourceVersion with nothing a consumer resolves
            return
        self._publish(record.to_dict(), stop)
        self._pods[record.uid] = record

    def _on_event_list(self, items: list[RawObject], resource_version: str, stop: threading.Event) -> None:
        now = self._clock_ns()
        present: dict[str, str | None] = {}
        for item in items:
            record = event_record(item, cluster=self.cluster, node=self.node, change="SYNC", observed_ns=now)
            present[record.uid] = record.resource_version
            if self._events.get(record.uid, "") != record.resource_version:  # else published as it is already
                self._publish(record.to_dict(), stop)
                self._events[record.uid] = record.resource_version
        self._events = present  # forgets the events the API server expired meanwhile

    def _on_event_change(self, change: str, raw: RawObject, stop: threading.Event) -> None:
        record = event_record(raw, cluster=self.cluster, node=self.node, change=change, observed_ns=self._clock_ns())
        if change == "DELETED":
            self._events.pop(record.uid, None)  # the event's TTL ran out: nothing happened in the cluster
            return
        self._publish(record.to_dict(), stop)
        self._events[record.uid] = record.resource_version

    def _on_object_list(self, schema: str, items: list[RawObject], resource_version: str,
                        stop: threading.Event) -> None:
        now = self._clock_ns()
        known = self._objects[schema]
        snapshot = [object_record(schema, item, cluster=self.cluster, node=self.node, change="SYNC", observed_ns=now)
                    for item in items]
        present = {record.uid for record in snapshot}
        for uid, record in list(known.items()):
            if uid not in present:  # deleted while the watch was down
                self._publish(replace(record, change="DELETED", observed_ns=now).to_dict(), stop)
                del known[uid]
        for record in snapshot:
            self._publish(record.to_dict(), stop)
            known[record.uid] = record

    def _on_object_change(self, schema: str, change: str, raw: RawObject, stop: threading.Event) -> None:
        record = object_record(schema, raw, cluster=self.cluster, node=self.node, change=change,
                               observed_ns=self._clock_ns())
        known = self._objects[schema]
        if change == "MODIFIED" and record.uid in known and known[record.uid].same_state(record):
            known[record.uid] = record  # a heartbeat: nothing a consumer reads changed
            return
        self._publish(record.to_dict(), stop)
        if change == "DELETED":
            known.pop(record.uid, None)
        else:
            known[record.uid] = record

    def _publish(self, value: dict[str, Any], stop: threading.Event) -> None:
        for attempt in range(1, self.publish_attempts + 1):
            try:
                with self._publish_lock:
                    self.bus.publish(self.topic, self.key, value)
                return
            except Exception as exc:  # noqa: BLE001 - any bus outage is retried; the last failure forces a re-list
                if attempt == self.publish_attempts or stop.is_set():
                    raise PublishError(f"bus publish to {self.topic} failed after {attempt} attempt(s): "
                                       f"{type(exc).__name__}") from exc
                logger.warning("retrying bus publish", extra={"node": self.node, "attempt": attempt,
                                                              "error": type(exc).__name__})
                stop.wait(self._backoff(attempt))
        raise AssertionError("unreachable")


def _in_cluster_configuration() -> kube_client.Configuration:
    """The pod's service account token and CA, as mounted by Kubernetes (the token is re-read when it rotates)."""
    configuration = kube_client.Configuration()
    kube_config.load_incluster_config(client_configuration=configuration)
    return configuration
