"""Dissection of capture segments into table rows.

``decode`` locates the transport header of each packet (pure ``struct``, no scapy on this path), and
``ConnectionTracker`` folds the decoded packets of one node into the ``connections`` table. Per-protocol
modules (``dns``, ``http``, ``tls``) receive the payloads of that same pass through ``AppTracker`` and share
``connection_id``. The ``tcp`` package owns TCP analysis: its flags (``tcp.flags``), Wireshark's sequence analysis
(``tcp.analysis``) and the batched path that folds clean segments in bulk (``tcp.batch``).
"""


from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# `decode` names both a module and its function: the function, as before (the module is light).
from freezeframe.dissect.decode import Decoded, Skip, decode

if TYPE_CHECKING:
    from freezeframe.dissect.apps import AppTracker
    from freezeframe.dissect.connections import ConnectionTracker, DissectStats, connection_id

__all__ = ["AppTracker", "ConnectionTracker", "Decoded", "DissectStats", "Skip", "connection_id", "decode"]
# Loaded when first asked for (PEP 562): a run on the compiled core loads none of the reference trackers, whose
# imports (the DNS, HTTP and TLS parsers, the TCP analysis) were about 10 ms of every `freezeframe dissect`.
_HOMES = {"AppTracker": "apps", "ConnectionTracker": "connections", "DissectStats": "connections",
          "connection_id": "connections"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
