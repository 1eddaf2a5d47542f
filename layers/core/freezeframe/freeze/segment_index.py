"""The segment index: the segment records the indexer saw on Kafka, batched per hour and node in the evidence bucket.

A freeze needs each frozen version's sha256, seq and packet count. Reading them from object metadata costs one
HEAD per segment, which halves the freeze rate (a HEAD costs an endpoint about as much as a PutObjectRetention).
The indexer already holds every segment record, so it writes them in batches,
`index/<cluster>/<YYYY>/<MM>/<DD>/<HH>/<node>/<first seq>-<last seq>-<digest>.json` (hour = segment start), and a
freeze reads a handful of these per hour instead. A version missing from the index (Kafka lag, an indexer outage)
falls back to HEAD, so the index is an accelerator, never a source of truth: `verify` recomputes every hash.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import SegmentIndexBatch
from freezeframe.contracts.keys import HOUR_NS, index_batch_key, index_gap_key, index_prefixes, node_prefix
from freezeframe.contracts.models import SegmentRecord
from freezeframe.contracts.parallel import run_all

READ_WORKERS = 8  # index documents read in flight


def batch_key(cluster: str, node: str, records: list[SegmentRecord]) -> str:
    digest = hashlib.sha256("\n".join(f"{r.key}@{r.version_id}" for r in records).encode()).hexdigest()[:16]
    seqs = [r.seq for r in records]
    return index_batch_key(cluster, node, records[0].start_ns, min(seqs), max(seqs), digest)


def group(records: Iterable[SegmentRecord]) -> dict[tuple[str, str, int], list[SegmentRecord]]:
    """Pure: records grouped by cluster, node and start hour, each group sorted by seq."""
    groups: dict[tuple[str, str, int], list[SegmentRecord]] = defaultdict(list)
    for record in records:
        groups[(record.cluster, record.node, record.start_ns // HOUR_NS)].append(record)
    return {k: sorted(v, key=lambda r: r.seq) for k, v in groups.items()}


def write_batch(settings: Settings, s3: ObjectStore, records: Iterable[SegmentRecord]) -> list[str]:
    """One index object per (cluster, node, hour) of a batch; the name is derived from the content, so a retried
    batch rewrites the same keys instead of adding new ones."""
    keys = []
    for (cluster, node, _hour), items in group(records).items():
        key = batch_key(cluster, node, items)
        s3io.put_json(s3, settings.evidence_bucket, key, SegmentIndexBatch(tuple(items)).to_dict())
        keys.append(key)
    return keys


def write_gaps(settings: Settings, s3: ObjectStore, gaps: Iterable[Mapping[str, Any]]) -> list[str]:
    """The agents' gap records (segments evicted from a full spool), kept beside the segment records so a freeze
    can report them in its coverage."""
    keys = []
    for gap in gaps:
        key = index_gap_key(str(gap["cluster"]), str(gap["node"]), int(gap["start_ns"]), int(gap["first_seq"]),
                            int(gap["last_seq"]))
        s3io.put_json(s3, settings.evidence_bucket, key, SegmentIndexBatch((), (dict(gap),)).to_dict())
        keys.append(key)
    return keys


def load(settings: Settings, s3: ObjectStore, cluster: str, start_ns: int, end_ns: int, nodes: Iterable[str] = ()
         ) -> tuple[dict[tuple[str, str], SegmentRecord], list[dict[str, Any]]]:
    """(key, version id) -> record for every indexed segment of the window's hours, and the gap records there: of
    `nodes` only when given (an hour of a large cluster indexes every node's segments), else of every node."""
    prefixes = index_prefixes(cluster, start_ns, end_ns)
    if nodes:
        prefixes = [node_prefix(prefix, node) for prefix in prefixes for node in sorted(set(nodes))]
    keys = [k for prefix in prefixes for k in s3io.list_keys(s3, settings.evidence_bucket, prefix)]
    documents = run_all(lambda k: s3io.get_bytes(s3, settings.evidence_bucket, k), keys, READ_WORKERS)
    out: dict[tuple[str, str], SegmentRecord] = {}
    gaps: list[dict[str, Any]] = []
    for raw in documents:
        document = json.loads(raw)
        if not isinstance(document, dict) or document.get("schema") != SegmentIndexBatch.SCHEMA:
            continue  # not an index document (a stray upload under the prefix)
        batch = SegmentIndexBatch.from_dict(document)
        out.update(((record.key, record.version_id), record) for record in batch.records)
        gaps.extend(dict(gap) for gap in batch.gaps)
    return out, gaps
