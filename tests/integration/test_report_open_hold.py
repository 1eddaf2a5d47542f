"""The report finalize writes while the incident's hold is open (issue 13, item 7), on LocalStack with the incident's
signed custody chain: the still-open part of the window (segments the hold will still lock) is drawn apart from a
gap, the one real gap keeps its reason, and the page says its tables are partial.

The inputs are what the freeze writes (a manifest with its `hold`, sealed into the chain) and finalize's own public
function; the page is read back from the evidence bucket, as a reader gets it. Code from before the fix drew the
open part as a red gap, like evidence that was lost."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from freezeframe.adapters import s3 as s3io
from freezeframe.contracts.config import Settings
from freezeframe.contracts.keys import report_key
from freezeframe.contracts.models import FreezeRequest, LockSpec, ManifestEntry, Scope, from_ns, to_ns
from freezeframe.custody.manifest import build_manifest
from freezeframe.dissect.finalize import finalize_incident
from freezeframe.freeze.holds import hold_for
from freezeframe.investigate.query import connect_local
from freezeframe.investigate.report import render_incident_report, store_report
from tests.fixtures.custody import put_signed_manifest
from tests.fixtures.evidence_tables import write_tables

pytestmark = pytest.mark.integration


def _entry(config: Settings, seq: int, start_ns: int, end_ns: int) -> ManifestEntry:
    return ManifestEntry(key=f"raw/{config.cluster}/node-a/{start_ns}-{end_ns}.pcap.zst", version_id=f"v{seq}",
                         sha256="0" * 64, size=1, node="node-a", start_ns=start_ns, end_ns=end_ns, seq=seq, packets=5,
                         lock_mode="COMPLIANCE", retain_until="2099-01-01T00:00:00.000Z", legal_hold=False)


def _clock(ns: int) -> str:
    moment = from_ns(ns)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def test_the_report_draws_the_open_hold_apart_from_a_gap(local: Any, tmp_path: Path) -> None:
    config, s3, _ = local
    now = datetime.now(UTC).replace(microsecond=0)
    base = to_ns(now)
    second = 1_000_000_000
    incident = f"it-openhold-{uuid.uuid4().hex[:6]}"
    request = FreezeRequest(incident_id=incident, source="api", title="open hold", severity="high",
                            window_start=now - timedelta(seconds=60), window_end=now + timedelta(seconds=60),
                            scope=Scope(config.cluster), lock=LockSpec("COMPLIANCE", now + timedelta(days=1)))
    # node-a: -60..-40 s (seq 1) and -30..-20 s (seq 3, seq 2 never arrived); the window runs to +60 s and the hold
    # locks what is uploaded until it closes (+60 s plus the grace).
    manifest = build_manifest(request, [_entry(config, 1, base - 60 * second, base - 40 * second),
                                        _entry(config, 3, base - 30 * second, base - 20 * second)],
                              now, config.raw_bucket)
    hold = hold_for(request, config.hold_grace_s, now)
    assert hold is not None and hold.closes_at > now
    manifest["hold"] = hold.to_dict()  # as the freeze writes it
    put_signed_manifest(config, s3, incident, manifest, (request.lock.mode, request.lock.retain_until))
    ts = base - 50 * second
    root = write_tables(tmp_path, {"connections": [{"ts_ns": ts}]}, incident_id=incident,
                        dt=f"{from_ns(ts):%Y-%m-%d}")

    def writer(settings: Settings, client: Any, incident_id: str) -> str:
        page = render_incident_report(settings, client, incident_id, con=connect_local(root))
        return store_report(settings, client, incident_id, page)

    summary = finalize_incident(config, s3, incident, [], register=lambda _settings, _keys: [], writer=writer,
                                now=now)
    assert summary["report"]["key"] == report_key(incident), summary["report"]
    page = s3io.get_bytes(s3, config.evidence_bucket, report_key(incident)).decode()
    coverage = page[page.index('id="coverage"'):page.index('id="timeline"')]
    drawn = re.findall(r'<rect [^>]*class="(gap|pending)"[^>]*>(?:<title>([^<]*)</title>)?', coverage)
    # -20..+60 s is still to come (the hold is open): drawn as pending, not as a gap; -40..-30 s is the one gap.
    assert [kind for kind, _ in drawn] == ["gap", "pending"], f"the hold's open part is drawn as a gap: {drawn}"
    assert drawn[1][1] == (f"{_clock(base - 20 * second)} to {_clock(base + 60 * second)}: "
                           "hold open (still being locked)")
    assert drawn[0][1] == (f"{_clock(base - 40 * second)} to {_clock(base - 30 * second)}: "
                           "segments 2 missing (lost before upload)")
    assert re.search(r"<dt>tables</dt><dd>partial until [^<]*\(the hold is open\)</dd>", page), \
        "the report does not say its tables are partial"
