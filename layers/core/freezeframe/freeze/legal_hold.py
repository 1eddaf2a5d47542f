"""Legal holds with a per-version reference registry.

S3 has one legal-hold flag per object version, but many incidents may hold the same segment. Each incident that
places a hold writes a reference `legal-holds/<version digest>/<incident>.json` (create-only) before turning the flag
on; releasing writes `<incident>.released.json` beside it, and the flag goes off only when every reference to that
version is released. So releasing one incident's hold never releases another's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.s3 import ObjectStore
from freezeframe.contracts.config import Settings
from freezeframe.contracts.documents import LegalHoldReference, LegalHoldRelease
from freezeframe.contracts.keys import (
    LEGAL_HOLD_RELEASED_SUFFIX,
    LEGAL_HOLDS_ROOT,
    legal_hold_key,
    legal_hold_prefix,
    legal_hold_released_key,
)
from freezeframe.contracts.models import iso

logger = logging.getLogger(__name__)
REGISTRY_ROOT = LEGAL_HOLDS_ROOT
RELEASED_SUFFIX = LEGAL_HOLD_RELEASED_SUFFIX


@dataclass(frozen=True, slots=True)
class HeldVersion:
    bucket: str
    key: str
    version_id: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.bucket}\n{self.key}\n{self.version_id}".encode()).hexdigest()


def reference_key(version: HeldVersion, incident_id: str) -> str:
    return legal_hold_key(version.digest, incident_id)


def active_holders(reference_keys: Iterable[str]) -> set[str]:
    """Pure: the incidents whose reference is not released, from the registry's key names."""
    names = [key.rsplit("/", 1)[1] for key in reference_keys]
    released = {n.removesuffix(RELEASED_SUFFIX) for n in names if n.endswith(RELEASED_SUFFIX)}
    placed = {n.removesuffix(".json") for n in names if not n.endswith(RELEASED_SUFFIX)}
    return placed - released


def place(settings: Settings, s3: ObjectStore, incident_id: str, version: HeldVersion, now: datetime) -> None:
    # The reference lands before the flag, so a crash in between leaves a reference, never an unexplained hold.
    reference = LegalHoldReference(incident_id, version.bucket, version.key, version.version_id, iso(now))
    s3io.put_json(s3, settings.evidence_bucket, reference_key(version, incident_id), reference.to_dict(),
                  create_only=True)
    s3io.set_legal_hold(s3, version.bucket, version.key, version.version_id, on=True)


def release(settings: Settings, s3: ObjectStore, incident_id: str, versions: Iterable[HeldVersion], now: datetime
            ) -> dict[str, bool]:
    """Releases an incident's references; returns, per version key@id, whether the flag is still on."""
    still_held = {}
    for version in versions:
        placed = reference_key(version, incident_id)
        if not s3io.exists(s3, settings.evidence_bucket, placed):
            continue
        s3io.put_json(s3, settings.evidence_bucket, legal_hold_released_key(version.digest, incident_id),
                      LegalHoldRelease(incident_id, iso(now)).to_dict(), create_only=True)
        prefix = legal_hold_prefix(version.digest)
        holders = active_holders(s3io.list_keys(s3, settings.evidence_bucket, prefix))
        if not holders:
            s3io.set_legal_hold(s3, version.bucket, version.key, version.version_id, on=False)
        still_held[f"{version.key}@{version.version_id}"] = bool(holders)
        logger.info("legal hold released", extra={"incident_id": incident_id, "segment": version.key,
                                                   "other_holders": len(holders)})
    return still_held
