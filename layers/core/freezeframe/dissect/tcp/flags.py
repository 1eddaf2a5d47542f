"""The TCP flags of dissection, defined once: header flag bits, Wireshark's analysis flags, Zeek's history letters.

- Header flags (``TH_*``) are the bits of the TCP flags field; ``dissect.decode`` reads the header and owns them,
  they are re-exported here so that TCP analysis code imports every flag from one module.
- Analysis flags (``A_*``) are what ``analysis.TcpAnalysis.segment`` returns per segment: the values of TCP_A_* in
  Wireshark's packet-tcp.c, each the tshark field ``tcp.analysis.<name>``. Where each one is decided, and in which
  order, is the docstring of ``dissect.tcp.analysis``. The batched path (``dissect.tcp.batch``) decides none of
  them: it only proves in bulk that a segment can raise none (its "clean" test) and sends every other segment
  through ``TcpAnalysis.segment``.
- History bits (``H_*``) are Zeek's ``history`` letters, one bit per letter and side; ``TcpAnalysis`` records the
  letters in the order the bits first appear (``TcpAnalysis.note_history``).
"""

from __future__ import annotations

from freezeframe.dissect.decode import TH_ACK, TH_FIN, TH_RST, TH_SYN

__all__ = [
    "A_ACK_LOST_PACKET", "A_DUPLICATE_ACK", "A_FAST_RETRANSMISSION", "A_KEEP_ALIVE", "A_KEEP_ALIVE_ACK",
    "A_LOST_PACKET", "A_OUT_OF_ORDER", "A_RETRANSMISSION", "A_RETRANSMITTED", "A_SPURIOUS_RETRANSMISSION",
    "A_WINDOW_FULL", "A_WINDOW_UPDATE", "A_ZERO_WINDOW", "A_ZERO_WINDOW_PROBE", "A_ZERO_WINDOW_PROBE_ACK",
    "HISTORY_IN", "HISTORY_LETTERS", "HISTORY_OUT", "H_ACK", "H_DATA", "H_FIN", "H_RETRANSMISSION", "H_RST", "H_SYN",
    "H_SYNACK", "H_ZERO_WINDOW", "TH_ACK", "TH_FIN", "TH_RST", "TH_SYN",
]

# Analysis flag bits of one segment (values as TCP_A_* in packet-tcp.c).
A_RETRANSMISSION = 0x0001
A_LOST_PACKET = 0x0002
A_ACK_LOST_PACKET = 0x0004
A_KEEP_ALIVE = 0x0008
A_DUPLICATE_ACK = 0x0010
A_ZERO_WINDOW = 0x0020
A_ZERO_WINDOW_PROBE = 0x0040
A_ZERO_WINDOW_PROBE_ACK = 0x0080
A_KEEP_ALIVE_ACK = 0x0100
A_OUT_OF_ORDER = 0x0200
A_FAST_RETRANSMISSION = 0x0400
A_WINDOW_UPDATE = 0x0800
A_WINDOW_FULL = 0x1000
A_SPURIOUS_RETRANSMISSION = 0x8000
# tshark sets tcp.analysis.retransmission on fast and spurious retransmissions too: all three count as one.
A_RETRANSMITTED = A_RETRANSMISSION | A_FAST_RETRANSMISSION | A_SPURIOUS_RETRANSMISSION

# Zeek history letters, one bit each; the upper-case letter is the initiator's, the lower-case the responder's.
H_SYN = 1  # s: SYN without ACK
H_SYNACK = 2  # h: SYN with ACK
H_ACK = 4  # a: pure ACK
H_DATA = 8  # d: payload
H_FIN = 16  # f
H_RST = 32  # r
H_RETRANSMISSION = 64  # t: a segment Wireshark flags as a retransmission
H_ZERO_WINDOW = 128  # w: a zero window advertised
HISTORY_LETTERS = {H_SYN: "s", H_SYNACK: "h", H_ACK: "a", H_DATA: "d", H_FIN: "f", H_RST: "r",
                   H_RETRANSMISSION: "t", H_ZERO_WINDOW: "w"}
# The letters a set of new bits adds, in the order above, for every combination of bits: one lookup per segment.
HISTORY_IN = tuple([letter for bit, letter in HISTORY_LETTERS.items() if bits & bit] for bits in range(256))
HISTORY_OUT = tuple([letter.upper() for letter in letters] for letters in HISTORY_IN)
