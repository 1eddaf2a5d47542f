"""Freeze rules: which alerts freeze, with which window, lock and scope. Pure: a parsed document and a decision.

The document is JSON (FREEZEFRAME_FREEZE_RULES inline, or FREEZEFRAME_FREEZE_RULES_FILE), so that the Lambda
functions need no YAML parser:

    {"rules": [
        {"name": "payments-critical",
         "match": {"source": "alertmanager", "severity": ["critical"], "labels": {"team": "payments"}},
         "freeze": true, "lookback_s": 1800, "lookahead_s": 600,
         "lock": {"mode": "COMPLIANCE", "retain_days": 90, "legal_hold": true},
         "scope_labels": {"namespace": "kubernetes_namespace"}},
        {"name": "ignore-info", "match": {"severity": ["info", "none"]}, "freeze": false}],
     "default": {"freeze": true}}

The first rule whose every `match` key matches decides; otherwise `default`; unset fields fall back to Settings.
Match keys: source, severity (list), labels (exact values), and for PagerDuty service (id or name), urgency,
priority (lists).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import ConfigError

LIST_KEYS = ("severity", "service", "urgency", "priority")
SCOPE_FIELDS = ("cluster", "node", "namespace", "pod")
DEFAULT_SCOPE_LABELS: dict[str, tuple[str, ...]] = {
    "cluster": ("cluster",),
    "node": ("node", "kubernetes_node", "nodename"),
    "namespace": ("namespace", "kubernetes_namespace"),
    "pod": ("pod", "kubernetes_pod_name"),
}


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    freeze: bool
    lookback_s: int
    lookahead_s: int
    lock_mode: str
    retain_days: int
    legal_hold: bool
    scope_labels: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: DEFAULT_SCOPE_LABELS)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Mapping[str, Any]
    settings: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FreezeRules:
    rules: tuple[Rule, ...] = ()
    default: Mapping[str, Any] = field(default_factory=dict)

    def decide(self, settings: Settings, *, source: str, severity: str, labels: Mapping[str, str],
               attributes: Mapping[str, str] | None = None) -> Decision:
        facts = {"source": source, "severity": severity, **(attributes or {})}
        for rule in self.rules:
            if _matches(rule.match, facts, labels):
                return _decision(rule.name, rule.settings, settings)
        return _decision("default", self.default, settings)


def parse_rules(document: str | None) -> FreezeRules:
    if not document:
        return FreezeRules()
    try:
        raw = json.loads(document)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"freeze rules are not valid JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError("freeze rules must be a JSON object with 'rules' and 'default'")
    rules = []
    for index, item in enumerate(raw.get("rules") or []):
        if not isinstance(item, Mapping) or not isinstance(item.get("match", {}), Mapping):
            raise ConfigError(f"rules[{index}] must be an object with a 'match' object")
        settings_part = {k: v for k, v in item.items() if k not in ("name", "match")}
        _check_settings(settings_part, f"rules[{index}]")
        rules.append(Rule(str(item.get("name", f"rule-{index}")), dict(item.get("match", {})), settings_part))
    default = raw.get("default") or {}
    _check_settings(default, "default")
    return FreezeRules(tuple(rules), dict(default))


def load_rules(settings: Settings) -> FreezeRules:
    if settings.freeze_rules_file is not None:
        try:
            return parse_rules(settings.freeze_rules_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read freeze rules file {settings.freeze_rules_file}: {exc}") from exc
    return parse_rules(settings.freeze_rules)


def scope_value(labels: Mapping[str, str], decision: Decision, field_name: str) -> str | None:
    for label in decision.scope_labels.get(field_name, ()):
        if labels.get(label):
            return labels[label]
    return None


def _matches(match: Mapping[str, Any], facts: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    for key, expected in match.items():
        if key == "labels":
            if not all(labels.get(k) == v for k, v in dict(expected).items()):
                return False
        elif key in LIST_KEYS:
            allowed = [expected] if isinstance(expected, str) else list(expected)
            candidates = {facts.get(key), facts.get("service_id")} if key == "service" else {facts.get(key)}
            if not candidates & set(allowed):
                return False
        elif facts.get(key) != expected:
            return False
    return True


def _decision(name: str, part: Mapping[str, Any], settings: Settings) -> Decision:
    lock = part.get("lock") or {}
    scope_labels = dict(DEFAULT_SCOPE_LABELS)
    for field_name, label in (part.get("scope_labels") or {}).items():
        scope_labels[field_name] = (label,) if isinstance(label, str) else tuple(label)
    retain_days = int(lock.get("retain_days", settings.lock_retain_days))
    if retain_days > settings.max_retain_days:
        raise ConfigError(f"freeze rule {name!r}: lock.retain_days {retain_days} is over the configured maximum "
                          f"of {settings.max_retain_days} days")
    return Decision(
        rule=name,
        freeze=bool(part.get("freeze", True)),
        lookback_s=int(part.get("lookback_s", settings.lookback_s)),
        lookahead_s=int(part.get("lookahead_s", settings.lookahead_s)),
        lock_mode=str(lock.get("mode", settings.lock_mode)),
        retain_days=retain_days,
        legal_hold=bool(lock.get("legal_hold", False)),
        scope_labels=scope_labels,
    )


def _check_settings(part: Mapping[str, Any], where: str) -> None:
    if not isinstance(part, Mapping):
        raise ConfigError(f"{where} must be an object")
    unknown = set(part) - {"freeze", "lookback_s", "lookahead_s", "lock", "scope_labels"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    lock = part.get("lock") or {}
    if lock.get("mode", "COMPLIANCE") not in ("COMPLIANCE", "GOVERNANCE"):
        raise ConfigError(f"{where}.lock.mode must be COMPLIANCE or GOVERNANCE")
    for key in ("lookback_s", "lookahead_s"):
        if key in part and (not isinstance(part[key], int) or part[key] < 0):
            raise ConfigError(f"{where}.{key} must be a non-negative integer")
    if "retain_days" in lock and (not isinstance(lock["retain_days"], int) or lock["retain_days"] < 1):
        raise ConfigError(f"{where}.lock.retain_days must be a positive integer")
    unknown_scope = set(part.get("scope_labels") or {}) - set(SCOPE_FIELDS)
    if unknown_scope:
        raise ConfigError(f"{where}.scope_labels: unknown scope fields {sorted(unknown_scope)}")
