"""Consolidation (optional, FREEZEFRAME_CONSOLIDATE): a server-side copy of an incident's locked segments into the
evidence bucket, under `incidents/<id>/segments/<raw key>`, for cross-account sharing and archive tiers.

Each copy is made create-only with the incident's lock headers and an S3-computed SHA-256, which must equal the
frozen version's sha256 (a single-part object's full-object checksum), so a copy is provably the same bytes.
The originals stay locked in place; the copies are listed in the manifest under `consolidated`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.errors import SegmentCorruptError
from freezeframe.contracts.keys import copy_key
from freezeframe.contracts.models import FreezeRequest, ManifestEntry
from freezeframe.contracts.parallel import LOCK_LIMIT, run_all


def consolidate(settings: Settings, s3: ObjectStore, request: FreezeRequest, entries: Sequence[ManifestEntry]
                ) -> list[dict[str, Any]]:
    def copy(entry: ManifestEntry) -> dict[str, Any]:
        key = copy_key(request.incident_id, entry.key)
        copied = s3io.copy_version(s3, settings.raw_bucket, entry.key, entry.version_id, settings.evidence_bucket,
                                   key, (request.lock.mode, request.lock.retain_until))
        if copied.sha256 != entry.sha256:
            raise SegmentCorruptError(f"copy of {entry.key}@{entry.version_id} hashes to "
                                      f"{copied.sha256 or 'nothing'}, not the frozen {entry.sha256}")
        return {"source_key": entry.key, "source_version_id": entry.version_id, "bucket": settings.evidence_bucket,
                "key": key, "version_id": copied.version_id, "sha256": entry.sha256}

    return run_all(copy, entries, LOCK_LIMIT)
