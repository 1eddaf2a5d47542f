"""Prometheus Alertmanager webhook, payload version 4.

https://prometheus.io/docs/alerting/latest/configuration/#webhook_config: a group of alerts, each with
status, labels, annotations, startsAt, endsAt, generatorURL and fingerprint. Each firing alert becomes one
FreezeRequest whose incident id is stable across redeliveries (fingerprint + startsAt).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import check_name
from freezeframe.contracts.models import FreezeRequest, LockSpec, Scope, parse_iso
from freezeframe.intake.body import parse_object
from freezeframe.intake.rules import Decision, FreezeRules, scope_value
from freezeframe.intake.window import freeze_window

SUPPORTED_VERSION = "4"


@dataclass(frozen=True, slots=True)
class AlertmanagerBatch:
    requests: tuple[FreezeRequest, ...]
    resolved_incidents: tuple[str, ...]
    truncated_alerts: int
    group_key: str
    ignored: tuple[str, ...] = ()  # fingerprints that a freeze rule told us not to freeze


def parse_body(body: bytes) -> Mapping[str, Any]:
    """The webhook body as a JSON object, within the bounds of freezeframe.intake.body (depth, numbers, UTF-8)."""
    return parse_object(body)


def incident_id_for(fingerprint: str, starts_at: str) -> str:
    digest = hashlib.sha256(f"{fingerprint}|{starts_at}".encode()).hexdigest()[:20]
    return f"am-{digest}"


def to_freeze_requests(payload: Mapping[str, Any], settings: Settings, now: datetime,
                       rules: FreezeRules | None = None) -> AlertmanagerBatch:
    """Validates the whole payload first, so that a bad alert anywhere rejects the batch before anything is written."""
    version = payload.get("version")
    if version != SUPPORTED_VERSION:
        raise PayloadError(f"unsupported Alertmanager payload version {version!r}; expected '4'")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("missing field 'alerts' (a list)")
    truncated = payload.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or truncated < 0:
        raise PayloadError("truncatedAlerts must be a non-negative integer")
    common_labels = _str_map(payload.get("commonLabels") or {}, "commonLabels")
    requests: list[FreezeRequest] = []
    resolved: list[str] = []
    ignored: list[str] = []
    rules = rules or FreezeRules()
    for index, alert in enumerate(alerts):
        if not isinstance(alert, Mapping):
            raise PayloadError(f"alerts[{index}] must be an object")
        status = alert.get("status")
        fingerprint = alert.get("fingerprint")
        starts_raw = alert.get("startsAt")
        if status not in ("firing", "resolved"):
            raise PayloadError(f"alerts[{index}].status must be 'firing' or 'resolved', got {status!r}")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise PayloadError(f"alerts[{index}] is missing 'fingerprint'")
        if not isinstance(starts_raw, str):
            raise PayloadError(f"alerts[{index}] is missing 'startsAt'")
        starts_at = parse_iso(starts_raw, f"alerts[{index}].startsAt")
        labels = {**common_labels, **_str_map(alert.get("labels") or {}, f"alerts[{index}].labels")}
        annotations = _str_map(alert.get("annotations") or {}, f"alerts[{index}].annotations")
        incident_id = incident_id_for(fingerprint, starts_raw)
        if status == "resolved":
            resolved.append(incident_id)
            continue
        severity = labels.get("severity", "unknown")
        decision = rules.decide(settings, source="alertmanager", severity=severity, labels=labels)
        if not decision.freeze:
            ignored.append(fingerprint)
            continue
        window_start, window_end = freeze_window(starts_at, now, decision.lookback_s, decision.lookahead_s)
        requests.append(FreezeRequest(
            incident_id=incident_id,
            source="alertmanager",
            title=annotations.get("summary") or labels.get("alertname") or "alertmanager alert",
            severity=severity,
            window_start=window_start,
            window_end=window_end,
            scope=scope_from_labels(labels, settings, decision),
            lock=LockSpec(mode=decision.lock_mode, retain_until=now + timedelta(days=decision.retain_days),
                          legal_hold=decision.legal_hold),
            labels=tuple(sorted(labels.items())),
            received_at=now.astimezone(UTC),
            alert_at=starts_at,
        ))
    return AlertmanagerBatch(tuple(requests), tuple(resolved), truncated, str(payload.get("groupKey", "")),
                             tuple(ignored))


def scope_from_labels(labels: Mapping[str, str], settings: Settings, decision: Decision) -> Scope:
    """The freeze scope named by an alert's labels, through the rule's label mapping."""
    cluster = check_name("cluster", scope_value(labels, decision, "cluster") or settings.cluster)
    node, namespace, pod = (scope_value(labels, decision, f) for f in ("node", "namespace", "pod"))
    if node:
        check_name("node", node)  # it becomes a key prefix of the freeze's listing
    return Scope(cluster=cluster, nodes=(node,) if node else (), namespaces=(namespace,) if namespace else (),
                 pods=(pod,) if pod else ())


def _str_map(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PayloadError(f"{name} must be an object of strings")
    return dict(value)
