"""Node-state documents (freezeframe.freeze.node_state) into the `node_stats` and `node_config` tables.

node_stats is long: one row per document and number, with the kernel's running total (`value`) and, for counters,
what happened during the period (`delta`, the difference to the node's previous document). A counter that went
backwards (the agent or the node restarted) has a null delta rather than a negative one. node_config has a row
whenever a configuration's digest differs from the node's previous one (the first document counts as a change).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.schemas import NODE_CONFIG, NODE_STATS

if TYPE_CHECKING:
    from freezeframe.adapters.s3 import ObjectStore
    from freezeframe.freeze.node_state import NodeStateDocument

logger = logging.getLogger(__name__)
# Levels rather than running totals: their delta says nothing.
GAUGES = frozenset({"Tcp.CurrEstab", "count", "max", "mtu"})


def _is_gauge(source: str, metric: str) -> bool:
    return source == "sockets" or metric in GAUGES


def _numbers(document: NodeStateDocument) -> Iterable[tuple[str, str, str | None, int]]:
    for metric, value in sorted(document.counters.items()):
        yield "snmp", metric, None, value
    for metric, value in sorted(document.conntrack.items()):
        yield "conntrack", metric, None, value
    for device, values in sorted(document.interfaces.items()):
        for metric, value in sorted(values.items()):
            yield "interface", metric, device, value
    for metric, value in sorted(document.sockets.items()):
        yield "sockets", metric, None, value


def node_stats(documents: Iterable[NodeStateDocument]) -> pa.Table:
    rows: dict[str, list[object]] = {name: [] for name in NODE_STATS.names}
    previous: dict[tuple[str, str, str, str | None], int] = {}
    for document in sorted(documents, key=lambda d: (d.node, d.end_ns)):
        at = datetime.fromtimestamp(document.end_ns / 1e9, UTC)
        for source, metric, device, value in _numbers(document):
            gauge = _is_gauge(source, metric)
            before = previous.get((document.node, source, metric, device))
            delta = None if gauge or before is None or value < before else value - before
            previous[(document.node, source, metric, device)] = value
            for name, item in (("node", document.node), ("ts", at), ("ts_ns", document.end_ns),
                               ("start_ns", document.start_ns), ("source", source), ("metric", metric),
                               ("device", device), ("kind", "gauge" if gauge else "counter"), ("value", value),
                               ("delta", delta)):
                rows[name].append(item)
    return pa.table(rows, schema=NODE_STATS)


def node_config(documents: Iterable[NodeStateDocument]) -> pa.Table:
    rows: dict[str, list[object]] = {name: [] for name in NODE_CONFIG.names}
    ordered = sorted(documents, key=lambda d: (d.node, d.end_ns))
    if not ordered:
        return pa.table(rows, schema=NODE_CONFIG)
    from freezeframe.freeze.node_state import CONFIG_KINDS  # noqa: PLC0415 - see frozen_documents

    last: dict[tuple[str, str], str] = {}
    for document in ordered:
        for kind in CONFIG_KINDS:
            state = document.config.get(kind)
            if state is None or last.get((document.node, kind)) == state.digest:
                continue
            for name, item in (("node", document.node), ("ts", datetime.fromtimestamp(document.end_ns / 1e9, UTC)),
                               ("ts_ns", document.end_ns), ("kind", kind), ("digest", state.digest),
                               ("previous_digest", last.get((document.node, kind))), ("content", state.text),
                               ("error", state.error)):
                rows[name].append(item)
            last[(document.node, kind)] = state.digest
    return pa.table(rows, schema=NODE_CONFIG)


def frozen_documents(s3: ObjectStore, manifest: Mapping[str, Any], node: str, raw_bucket: str
                     ) -> tuple[list[NodeStateDocument], list[dict[str, str]], int]:
    """The node's frozen node-state documents, each checked against the manifest's sha256 before it is read:
    (documents, rejected ones as corrupt-segment records, malformed count). A malformed document is counted and
    skipped; one whose bytes differ from the manifest is rejected loudly like a corrupt segment."""
    # The node-state documents' module and the S3 adapter are loaded when documents are read: the tables of a local
    # `freezeframe dissect` without --node-state need neither (their imports were 40 ms of every run).
    from freezeframe.adapters import s3 as s3io  # noqa: PLC0415
    from freezeframe.freeze.node_state import NodeStateDocument, entries_of  # noqa: PLC0415

    documents, corrupt, malformed = [], [], 0
    for entry in entries_of(manifest):
        if entry.node != node:
            continue
        body = s3io.get_bytes(s3, raw_bucket, entry.key, entry.version_id)
        actual = hashlib.sha256(body).hexdigest()
        if actual != entry.sha256:
            corrupt.append({"key": entry.key, "version_id": entry.version_id,
                            "reason": f"sha256 {actual} does not match the manifest's {entry.sha256}"})
            continue
        try:
            documents.append(NodeStateDocument.decode(body))
        except PayloadError as exc:
            logger.warning("malformed node-state document", extra={"node": node, "document": entry.key,
                                                                   "reason": str(exc)})
            malformed += 1
    return documents, corrupt, malformed
