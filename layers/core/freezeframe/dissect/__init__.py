"""Dissection of capture segments into table rows.

``decode`` locates the transport header of each packet (pure ``struct``, no scapy on this path), and
``ConnectionTracker`` folds the decoded packets of one node into the ``connections`` table. Per-protocol
modules (``dns``, ``http``, ``tls``) receive the payloads of that same pass through ``AppTracker`` and share
``connection_id``. The ``tcp`` package owns TCP analysis: its flags (``tcp.flags``), Wireshark's sequence analysis
(``tcp.analysis``) and the batched path that folds clean segments in bulk (``tcp.batch``).
"""

from freezeframe.dissect.apps import AppTracker
from freezeframe.dissect.connections import ConnectionTracker, DissectStats, connection_id
from freezeframe.dissect.decode import Decoded, Skip, decode

__all__ = ["AppTracker", "ConnectionTracker", "Decoded", "DissectStats", "Skip", "connection_id", "decode"]
