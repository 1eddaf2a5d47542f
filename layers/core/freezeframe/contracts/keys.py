"""The S3 key layout: the one module that spells out where everything lives.

Raw segments: raw/<cluster>/<YYYY>/<MM>/<DD>/<HH>/<node>/<start_ns>-<end_ns>.<ext>, the hour being the
segment's start, so one prefix lists one hour of every node. Evidence: incidents/<id>/... and
tables/<table>/dt=<YYYY-MM-DD>/incident_id=<id>/<node>.parquet (hive partitions for Athena).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from freezeframe.contracts.errors import PayloadError

RAW_ROOT = "raw"
INCIDENTS_ROOT = "incidents"
TABLES_ROOT = "tables"
VIEWS_ROOT = "views"  # an incident's tables with one row per conversation across nodes (what SQL reads)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}\Z")
_RAW_KEY = re.compile(
    r"^raw/(?P<cluster>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/(?P<node>[^/]+)/"
    r"(?P<start>\d+)-(?P<end>\d+)\.(?P<ext>[a-z0-9.]+)$"
)
HOUR_NS = 3600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class RawKey:
    cluster: str
    node: str
    start_ns: int
    end_ns: int
    ext: str


def check_name(kind: str, value: str) -> str:
    """Cluster, node and incident names become key parts: no slashes, no surprises."""
    if not _NAME.match(value):
        raise PayloadError(f"{kind} {value!r} is not a valid name (letters, digits, '.', '_', ':', '-'; max 253)")
    return value


def raw_segment_key(cluster: str, node: str, start_ns: int, end_ns: int, ext: str) -> str:
    check_name("cluster", cluster)
    check_name("node", node)
    if end_ns < start_ns:
        raise PayloadError(f"segment ends before it starts: {start_ns} > {end_ns}")
    return f"{hour_prefix(cluster, start_ns)}{node}/{start_ns}-{end_ns}.{ext}"


JOBS_ROOT = "jobs"


def job_segment_key(job: str, cluster: str, node: str, start_ns: int, end_ns: int, ext: str) -> str:
    """A recording job's segment: jobs/<job>/ followed by the raw layout's own parts (cluster, start hour, node,
    interval), so a job is listed, expired and locked by its own prefix without touching the always-on capture."""
    raw_segment_key(cluster, node, start_ns, end_ns, ext)  # the same checks as the always-on capture's keys
    root = f"{JOBS_ROOT}/{check_name('job', job)}"
    return f"{hour_prefix(cluster, start_ns, root)}{node}/{start_ns}-{end_ns}.{ext}"


def job_prefix(job: str, cluster: str) -> str:
    """Every segment of a recording job in one cluster (freezeframe.investigate.job_recordings)."""
    return f"{JOBS_ROOT}/{check_name('job', job)}/{check_name('cluster', cluster)}/"


_JOB_KEY = re.compile(r"^jobs/(?P<job>[^/]+)/(?P<cluster>[^/]+)/\d{4}/\d{2}/\d{2}/\d{2}/(?P<node>[^/]+)/"
                      r"(?P<start>\d+)-(?P<end>\d+)\.(?P<ext>[a-z0-9.]+)$")


def parse_job_segment_key(key: str) -> RawKey | None:
    """The parts of a recording job's segment key (``job_segment_key``), or None for a key that is not one."""
    match = _JOB_KEY.match(key)
    if not match:
        return None
    return RawKey(match["cluster"], match["node"], int(match["start"]), int(match["end"]), match["ext"])


def node_prefix(hour_folder: str, node: str) -> str:
    """One node's folder under an hour prefix (``hour_prefix``: raw segments, node state, the segment index), for a
    listing that wants only some nodes of a large cluster."""
    return f"{hour_folder}{check_name('node', node)}/"


def parse_raw_segment_key(key: str) -> RawKey | None:
    """The parts of a raw segment key, or None for a key that is not one (a stray upload, a folder marker)."""
    match = _RAW_KEY.match(key)
    if not match:
        return None
    start_ns = int(match["start"])
    if not key.startswith(f"{hour_prefix(match['cluster'], start_ns)}{match['node']}/"):
        return None  # the hour folder must be the segment's start hour
    return RawKey(match["cluster"], match["node"], start_ns, int(match["end"]), match["ext"])


def hour_prefixes(cluster: str, window_start_ns: int, window_end_ns: int, root: str = RAW_ROOT) -> list[str]:
    """Prefixes to list for a window: each hour it touches plus the hour before (a segment that began then may
    overlap the window's start). The raw segments, the segment index and the Kubernetes context share this
    hour layout under their own roots."""
    check_name("cluster", cluster)
    first = (window_start_ns // HOUR_NS - 1) * HOUR_NS
    return [hour_prefix(cluster, hour, root) for hour in range(first, window_end_ns + 1, HOUR_NS)]


def incident_prefix(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/"


def incident_key(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/incident.json"


def freeze_started_key(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/freeze-started.json"


def manifest_parts_prefix(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/manifest-parts/"


def manifest_part_key(incident_id: str, node: str, seq: int) -> str:
    return f"{manifest_parts_prefix(incident_id)}{check_name('node', node)}-{seq:012d}.json"


def follow_key(incident_id: str) -> str:
    """The latest dissection pass's follow-up (freezeframe.freeze.follow.FollowUp): whether the tables are partial."""
    return f"{incident_prefix(incident_id)}dissect-follow.json"


def resolved_key(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/resolved.json"


def webhook_delivery_key(source: str, delivery_id: str) -> str:
    """One marker per delivery id (PagerDuty's X-Webhook-Id), hashed: the id is the sender's text."""
    digest = hashlib.sha256(delivery_id.encode()).hexdigest()[:32]
    return f"{INCIDENTS_ROOT}/_deliveries/{check_name('source', source)}/{digest}.json"


def manifest_key(incident_id: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/manifest.json"


def dissect_status_key(incident_id: str, node: str) -> str:
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/dissect/{check_name('node', node)}.json"


def dissect_moved_key(incident_id: str, node: str) -> str:
    """The conn_ids whose rows in a node's chunk parts the merge folded into the node's part (dissect.fanout)."""
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/dissect/{check_name('node', node)}-moved.parquet"


def report_key(incident_id: str) -> str:
    """The incident's HTML report; a re-render (after late segments) adds a version, never replaces one."""
    return f"{INCIDENTS_ROOT}/{check_name('incident_id', incident_id)}/report.html"


K8S_ROOT = "k8s"


def k8s_batch_key(cluster: str, node: str, observed_ns: int, partition: int, first_offset: int,
                  last_offset: int) -> str:
    """A batch of freezeframe.k8s records of one node, filed under the hour of its first observation; named by its
    Kafka offsets, so a retried batch rewrites the same key."""
    return (f"{hour_prefix(cluster, observed_ns, K8S_ROOT)}{check_name('node', node)}/"
            f"{partition:04d}-{first_offset:015d}-{last_offset:015d}.jsonl")


def k8s_prefixes(cluster: str, start_ns: int, end_ns: int) -> list[str]:
    return hour_prefixes(cluster, start_ns, end_ns, K8S_ROOT)


INDEX_ROOT = "index"


def index_prefixes(cluster: str, start_ns: int, end_ns: int) -> list[str]:
    """The segment index's prefixes of a window: the same hours (and the hour before) that a freeze lists."""
    return hour_prefixes(cluster, start_ns, end_ns, INDEX_ROOT)


def index_batch_key(cluster: str, node: str, start_ns: int, first_seq: int, last_seq: int, digest: str) -> str:
    """A batch of one node's segment records, filed under its first segment's start hour."""
    return (f"{hour_prefix(cluster, start_ns, INDEX_ROOT)}{check_name('node', node)}/"
            f"{first_seq:012d}-{last_seq:012d}-{digest}.json")


def index_gap_key(cluster: str, node: str, start_ns: int, first_seq: int, last_seq: int) -> str:
    """One gap record of a node (segments its agent evicted), filed under the gap's start hour."""
    return (f"{hour_prefix(cluster, start_ns, INDEX_ROOT)}{check_name('node', node)}/"
            f"gap-{first_seq:012d}-{last_seq:012d}.json")


def tables_prefix() -> str:
    """Where every table's per-node parts are (``table_prefix`` of each)."""
    return f"{TABLES_ROOT}/"


def table_prefix(table: str) -> str:
    return f"{TABLES_ROOT}/{table}/"


# A node's part is <node>.parquet; a fanned-out dissection adds one part per time chunk, <node>~<chunk>.parquet
# ('~' is not allowed in a node name, so the two never collide).
_TABLE_PART = re.compile(r"^tables/(?P<table>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/incident_id=(?P<incident>[^/]+)/"
                         r"(?P<node>[^/~]+)(?:~(?P<chunk>\d{6}))?\.parquet$")


def is_chunk_part_key(key: str) -> bool:
    """Whether a Parquet part key is one time chunk's part of a node (``table_chunk_part_key``)."""
    match = _TABLE_PART.match(key)
    return bool(match and match["chunk"])


def parse_table_part_key(key: str) -> tuple[str, str, str, str] | None:
    """(table, dt, incident_id, node) of a Parquet part key (a node's part or one of its chunk parts), or None."""
    match = _TABLE_PART.match(key)
    return (match["table"], match["dt"], match["incident"], match["node"]) if match else None


def table_part_key(table: str, window_start_ns: int, incident_id: str, node: str) -> str:
    """Deterministic, so a retried dissection overwrites its part instead of adding a second one."""
    day = datetime.fromtimestamp(window_start_ns / 1e9, tz=UTC).strftime("%Y-%m-%d")
    return (f"{table_prefix(table)}dt={day}/incident_id={check_name('incident_id', incident_id)}/"
            f"{check_name('node', node)}.parquet")


def table_chunk_part_key(table: str, window_start_ns: int, incident_id: str, node: str, chunk: int) -> str:
    """A node's part of one time chunk (the rows on none of the chunk's edges, dissect.fanout), beside its part."""
    return f"{table_part_key(table, window_start_ns, incident_id, node).removesuffix('.parquet')}~{chunk:06d}.parquet"


def view_prefix(table: str) -> str:
    return f"{VIEWS_ROOT}/{table}/"


VIEW_FILE = "incident.parquet"


_VIEW_NUMBERED = re.compile(r"^incident-(?P<number>\d{5})\.parquet$")
# A view folded in hash buckets of endpoint pairs (freezeframe.dissect.foldshard): bucket-<b>.parquet, continued
# in bucket-<b>-00001.parquet, ... when compacted.
_VIEW_COMPACT = re.compile(r"^part-(?P<group>\d{5})(?:-(?P<number>\d{5}))?\.parquet$")
_VIEW_BUCKET = re.compile(r"^bucket-(?P<bucket>\d{5})(?:-(?P<number>\d{5}))?\.parquet$")


def view_key(table: str, dt: str, incident_id: str, number: int = 0) -> str:
    """An incident's view of one table (one row per conversation across nodes), beside its per-node parts' partition:
    `views/<table>/dt=<day>/incident_id=<id>/incident.parquet`. Deterministic: a later pass overwrites it. A view
    compacted into several files (freezeframe.dissect.compact) continues with `incident-00001.parquet`, ..."""
    name = VIEW_FILE if number == 0 else f"incident-{number:05d}.parquet"
    return f"{view_prefix(table)}dt={dt}/incident_id={check_name('incident_id', incident_id)}/{name}"


def view_bucket_key(table: str, dt: str, incident_id: str, bucket: int, number: int = 0) -> str:
    """One hash bucket's file of a view folded in buckets (freezeframe.dissect.foldshard), in the view's folder:
    `bucket-<b:05d>.parquet`, then `bucket-<b:05d>-00001.parquet`, ... when compacted."""
    name = f"bucket-{bucket:05d}.parquet" if number == 0 else f"bucket-{bucket:05d}-{number:05d}.parquet"
    return view_key(table, dt, incident_id).rsplit("/", 1)[0] + "/" + name


def view_compact_key(table: str, dt: str, incident_id: str, group: int, number: int = 0) -> str:
    """One compacted file of a view folded in buckets (a run of buckets' files joined to about 128 MB,
    freezeframe.dissect.foldshard): `part-<g:05d>.parquet`, then `part-<g:05d>-00001.parquet`, ..."""
    name = f"part-{group:05d}.parquet" if number == 0 else f"part-{group:05d}-{number:05d}.parquet"
    return view_key(table, dt, incident_id).rsplit("/", 1)[0] + "/" + name


def view_file_number(name: str) -> int | None:
    """The file number of a view file's name within its piece (0 for incident.parquet, bucket-<b>.parquet and
    part-<g>.parquet), or None for a name that is no view file."""
    if name == VIEW_FILE:
        return 0
    match = _VIEW_NUMBERED.match(name) or _VIEW_BUCKET.match(name) or _VIEW_COMPACT.match(name)
    return int(match["number"] or 0) if match else None


def view_file_bucket(name: str) -> int | None:
    """The hash bucket of a bucket view file's name (bucket-<b>[-<n>].parquet), None for any other name."""
    match = _VIEW_BUCKET.match(name)
    return int(match["bucket"]) if match else None


def hour_prefix(cluster: str, ts_ns: int, root: str = RAW_ROOT) -> str:
    hour = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_ns // 1000)
    return f"{root}/{cluster}/{hour:%Y/%m/%d/%H}/"


# Dissection in (node, time chunk) tasks (freezeframe.dissect.fanout): the plan the Distributed Map reads and each
# chunk's unmerged parts and status (a node's merged tables are its ordinary parts, table_part_key). All under the
# incident's dissect/ folder (the only incident area the dissect function may write); '_' keeps them apart from the
# node statuses (a node name has no '/').
def _plan_file(incident_id: str, name: str) -> str:
    return f"{incident_prefix(incident_id)}dissect/_plan/{name}"


def dissect_plan_key(incident_id: str) -> str:
    return _plan_file(incident_id, "items.json")


def dissect_plan_nodes_key(incident_id: str) -> str:
    """What the plan step planned per node (freezeframe.contracts.documents.DissectPlan), beside its items."""
    return _plan_file(incident_id, "nodes.json")


def fold_plan_key(incident_id: str) -> str:
    """The sharded fold's plan of the latest pass (freezeframe.dissect.foldshard): buckets, sources, day, run."""
    return _plan_file(incident_id, "fold.json")


def fold_route_items_key(incident_id: str) -> str:
    """The route items (one per source of rows) for a Distributed Map's ItemReader."""
    return _plan_file(incident_id, "fold-route.json")


def fold_items_key(incident_id: str) -> str:
    """The fold items ({"bucket": b}, one per hash bucket) for a Distributed Map's ItemReader."""
    return _plan_file(incident_id, "fold-buckets.json")


def fold_flow_items_key(incident_id: str) -> str:
    """The service_flows phase's items ({"bucket": t}, one per flow task) for a Distributed Map's ItemReader."""
    return _plan_file(incident_id, "fold-flows.json")


def fold_compact_items_key(incident_id: str) -> str:
    """The compaction items ({"run", "table", "group", "phase", "first", "last"}) for a Distributed Map's
    ItemReader."""
    return _plan_file(incident_id, "fold-compact.json")


def fold_route_key(incident_id: str, buckets: int, node: str, digest: str, source: str) -> str:
    """One source's rows routed into `buckets` hash buckets; named by the node's inputs, so a re-run reuses it and
    new inputs or another bucket count route again."""
    return (f"{incident_prefix(incident_id)}dissect/_fold/b{buckets}/{check_name('node', node)}/{digest[:16]}/"
            f"{check_name('source', source)}.route")


def fold_run_prefix(incident_id: str, run: str) -> str:
    """What one fold run (a fold plan's run id) writes besides the views: results, service flows between phases."""
    return f"{incident_prefix(incident_id)}dissect/_fold/run-{check_name('run', run)}/"


def fold_flows_key(incident_id: str, run: str, bucket: int) -> str:
    """Phase 1's service_flows rows of a bucket, routed to the flow task of their backend connection's bucket, with
    its re-point map."""
    return f"{fold_run_prefix(incident_id, run)}flows-{bucket:05d}.route"


def fold_result_key(incident_id: str, run: str, bucket: int, phase: int) -> str:
    return f"{fold_run_prefix(incident_id, run)}result-{bucket:05d}-{phase}.json"


def fold_compact_result_key(incident_id: str, run: str, table: str, group: int) -> str:
    """A compaction task's result: the files it wrote and the bucket files it joined."""
    return f"{fold_run_prefix(incident_id, run)}compact-{check_name('table', table)}-{group:05d}.json"


def chunk_prefix(incident_id: str, node: str, index: int) -> str:
    return f"{incident_prefix(incident_id)}dissect/_chunks/{check_name('node', node)}/{index:06d}/"


def chunk_file_key(incident_id: str, node: str, index: int, name: str) -> str:
    """One of a chunk task's Parquet files for the merge step (edge-<table>, warm-<table>, udp-pairs, extras,
    extras-body), under its chunk_prefix."""
    return f"{chunk_prefix(incident_id, node, index)}{name}.parquet"


def merge_prefix(incident_id: str, node: str, digest: str) -> str:
    """Where a node's merge steps of one pass (its inputs digest) leave their work for the next step
    (freezeframe.dissect.fanout)."""
    return f"{incident_prefix(incident_id)}dissect/_merge/{check_name('node', node)}/{digest[:16]}/"


NODE_STATE_ROOT = "nodestate"
NODE_STATE_EXT = "json"
_NODE_STATE_KEY = re.compile(
    r"^nodestate/(?P<cluster>[^/]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/(?P<node>[^/]+)/"
    r"(?P<start>\d+)-(?P<end>\d+)\.json$"
)


def node_state_key(cluster: str, node: str, start_ns: int, end_ns: int) -> str:
    """A node-state document (freezeframe.freeze.node_state) in the raw bucket: the raw segments' hour layout under its
    own
    root, so a freeze lists and locks a window's node state the way it does the window's segments."""
    raw_segment_key(cluster, node, start_ns, end_ns, NODE_STATE_EXT)  # the same checks as a segment's key
    return f"{hour_prefix(cluster, start_ns, NODE_STATE_ROOT)}{node}/{start_ns}-{end_ns}.{NODE_STATE_EXT}"


def parse_node_state_key(key: str) -> RawKey | None:
    """The parts of a node-state key, or None for a key that is not one."""
    match = _NODE_STATE_KEY.match(key)
    if not match:
        return None
    start_ns = int(match["start"])
    if not key.startswith(f"{hour_prefix(match['cluster'], start_ns, NODE_STATE_ROOT)}{match['node']}/"):
        return None
    return RawKey(match["cluster"], match["node"], start_ns, int(match["end"]), NODE_STATE_EXT)


def node_state_prefixes(cluster: str, start_ns: int, end_ns: int) -> list[str]:
    return hour_prefixes(cluster, start_ns, end_ns, NODE_STATE_ROOT)


def summary_key(incident_id: str) -> str:
    """The incident summary finalize writes (freezeframe.contracts.documents.Summary)."""
    return f"{incident_prefix(incident_id)}summary.json"


def chain_prefix(incident_id: str) -> str:
    """The signed custody chain's links (freezeframe.custody.chain)."""
    return f"{incident_prefix(incident_id)}chain/"


def link_key(incident_id: str, seq: int) -> str:
    return f"{chain_prefix(incident_id)}{seq:08d}.json"


def public_key_key(incident_id: str) -> str:
    """Where the public key is published beside the evidence (PEM)."""
    return f"{incident_prefix(incident_id)}public-key.pem"


def ledger_prefix(incident_id: str) -> str:
    """The custody ledger's entries (freezeframe.custody.ledger)."""
    return f"{incident_prefix(incident_id)}custody/"


def ledger_entry_key(incident_id: str, at: datetime, token: str) -> str:
    return f"{ledger_prefix(incident_id)}{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{token}.json"


def attempts_prefix(incident_id: str) -> str:
    """A failing freeze's attempt records (freezeframe.freeze.lifecycle)."""
    return f"{incident_prefix(incident_id)}freeze-attempts/"


def attempt_key(incident_id: str, attempt: int) -> str:
    return f"{attempts_prefix(incident_id)}{attempt:04d}.json"


def failed_key(incident_id: str) -> str:
    return f"{incident_prefix(incident_id)}freeze-failed.json"


def copy_key(incident_id: str, raw_key: str) -> str:
    """A raw segment consolidated into the evidence bucket (freezeframe.freeze.consolidate)."""
    return f"{incident_prefix(incident_id)}segments/{raw_key}"


def context_snapshot_key(incident_id: str, name: str) -> str:
    """A Kubernetes context snapshot of the window (`name`: k8s/..., freezeframe.freeze.k8s_context)."""
    return f"{incident_prefix(incident_id)}{name}"


def chunk_status_key(incident_id: str, node: str, index: int) -> str:
    return f"{chunk_prefix(incident_id, node, index)}status.json"


HOLDS_ROOT = "holds"


def holds_day_prefix(day: datetime) -> str:
    """The holds that close on `day` (freezeframe.freeze.holds): a few dates cover every open one."""
    return f"{HOLDS_ROOT}/{day.astimezone(UTC):%Y-%m-%d}/"


def hold_key(incident_id: str, closes_at: datetime) -> str:
    return f"{holds_day_prefix(closes_at)}{check_name('incident_id', incident_id)}.json"


LEGAL_HOLDS_ROOT = "legal-holds"
LEGAL_HOLD_RELEASED_SUFFIX = ".released.json"


def legal_hold_prefix(digest: str) -> str:
    """The legal-hold registry of one held version (freezeframe.freeze.legal_hold: `digest` names the version)."""
    return f"{LEGAL_HOLDS_ROOT}/{digest}/"


def legal_hold_key(digest: str, incident_id: str) -> str:
    """One incident's reference to a held version."""
    return f"{legal_hold_prefix(digest)}{check_name('incident_id', incident_id)}.json"


def legal_hold_released_key(digest: str, incident_id: str) -> str:
    """The marker that an incident released its reference (create-only beside it; the reference stays)."""
    return legal_hold_key(digest, incident_id).removesuffix(".json") + LEGAL_HOLD_RELEASED_SUFFIX


def incidents_prefix() -> str:
    """Where every incident's folder is (one per incident id)."""
    return f"{INCIDENTS_ROOT}/"
