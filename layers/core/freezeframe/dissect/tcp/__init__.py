"""TCP analysis: which segment gets which Wireshark flag, and the per-connection insight columns built from them.

- ``flags``: every flag, defined once: the TCP header bits (owned by ``dissect.decode``, re-exported), Wireshark's
  analysis flags (``A_*``, tshark's ``tcp.analysis.*``) and Zeek's history letters (``H_*``).
- ``analysis``: ``TcpAnalysis``, the port of Wireshark's ``tcp_analyze_sequence_number`` for one conversation. It is
  the only place a flag is decided; its fast path (the common in-order segment) and its general path share the
  checks they both make.
- ``batch``: the batched hot path (``feed_batches``), numpy over whole record batches. It decides no flag: it proves
  in bulk that a run of segments can raise none and folds the run into the conversation's state, and sends every
  other segment through ``TcpAnalysis``. It drives ``ConnectionTracker`` (``dissect.connections``) through the
  tracker's public batching seam only. Import it as ``freezeframe.dissect.tcp.batch`` (it needs the tracker, which
  needs ``analysis``, so this package does not import it).
"""

from freezeframe.dissect.tcp.analysis import (
    DEFAULT_OOO_THRESHOLD_NS,
    FAST_RETRANSMISSION_NS,
    MAX_UNACKED_SEGMENTS,
    MAX_WINDOW_SHIFT,
    WS_NONE,
    WS_UNKNOWN,
    Direction,
    TcpAnalysis,
    window_scale_option,
)
from freezeframe.dissect.tcp.flags import (
    A_ACK_LOST_PACKET,
    A_DUPLICATE_ACK,
    A_FAST_RETRANSMISSION,
    A_KEEP_ALIVE,
    A_KEEP_ALIVE_ACK,
    A_LOST_PACKET,
    A_OUT_OF_ORDER,
    A_RETRANSMISSION,
    A_SPURIOUS_RETRANSMISSION,
    A_WINDOW_FULL,
    A_WINDOW_UPDATE,
    A_ZERO_WINDOW,
    A_ZERO_WINDOW_PROBE,
    A_ZERO_WINDOW_PROBE_ACK,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
)

__all__ = [
    "A_ACK_LOST_PACKET", "A_DUPLICATE_ACK", "A_FAST_RETRANSMISSION", "A_KEEP_ALIVE", "A_KEEP_ALIVE_ACK",
    "A_LOST_PACKET", "A_OUT_OF_ORDER", "A_RETRANSMISSION", "A_SPURIOUS_RETRANSMISSION", "A_WINDOW_FULL",
    "A_WINDOW_UPDATE", "A_ZERO_WINDOW", "A_ZERO_WINDOW_PROBE", "A_ZERO_WINDOW_PROBE_ACK", "DEFAULT_OOO_THRESHOLD_NS",
    "FAST_RETRANSMISSION_NS", "MAX_UNACKED_SEGMENTS", "MAX_WINDOW_SHIFT", "TH_ACK", "TH_FIN", "TH_RST", "TH_SYN",
    "WS_NONE", "WS_UNKNOWN", "Direction", "TcpAnalysis", "window_scale_option",
]
