"""The TCP analysis package keeps its seams: the batched path uses only the tracker's public members.

``dissect/tcp/batch.py`` once drove ``ConnectionTracker`` through its private members (``_feed``, ``_batch_keys``,
``_live``, ``_identities``); the tracker now offers a public seam for that, and these tests fail as soon as any
module of ``dissect/`` other than ``connections.py`` reaches into a private member of a tracker again, or the batched
path into a private member of ``TcpAnalysis``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import freezeframe.dissect
from freezeframe.dissect.chunks import conn_state_from_history
from freezeframe.dissect.connections import ConnectionTracker
from freezeframe.dissect.tcp.analysis import history_bits
from freezeframe.dissect.tcp.flags import HISTORY_IN, HISTORY_OUT

DISSECT = Path(freezeframe.dissect.__file__).resolve().parent
BATCH = DISSECT / "tcp" / "batch.py"
# Names under which modules of dissect/ hold a tracker or a conversation's TcpAnalysis.
TRACKER_NAMES = {"tracker"}
ANALYSIS_NAMES = {"tcp", "analysis"}


def private_accesses(path: Path, names: set[str]) -> list[str]:
    """``name._member`` and ``self.name._member`` in ``path`` for every name in ``names`` (dunders excepted)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id in names
                or isinstance(owner, ast.Attribute) and owner.attr in names):
            found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_batch_uses_no_private_member_of_the_tracker() -> None:
    assert private_accesses(BATCH, TRACKER_NAMES) == []


def test_no_dissect_module_but_connections_uses_private_tracker_members() -> None:
    modules = [path for path in DISSECT.rglob("*.py") if path.name != "connections.py"]
    assert BATCH in modules
    assert [hit for path in modules for hit in private_accesses(path, TRACKER_NAMES)] == []


def test_batch_uses_no_private_member_of_the_analysis() -> None:
    assert private_accesses(BATCH, ANALYSIS_NAMES) == []


@pytest.mark.parametrize("source", [
    "tracker._feed(runs)",
    "self.tracker._live[6]",
    "tracker._batch_keys = set()",
])
def test_the_check_finds_private_access(tmp_path: Path, source: str) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source + "\n")
    assert private_accesses(path, TRACKER_NAMES)


def test_the_seam_exists_on_the_tracker() -> None:
    """What batch.py calls on the tracker, as names: a rename in connections.py must fail here, not at run time."""
    called = set()
    for node in ast.walk(ast.parse(BATCH.read_text())):
        if isinstance(node, ast.Attribute):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id == "tracker" or \
                    isinstance(owner, ast.Attribute) and owner.attr == "tracker":
                called.add(node.attr)
    assert called
    assert [name for name in sorted(called) if not hasattr(ConnectionTracker("n"), name)] == []


def test_history_bits_inverts_the_history_letters() -> None:
    """chunks.conn_state_from_history reads a merged history string through history_bits into the same conn_state
    function TcpAnalysis uses; that is exact only if the letters give back every bit each side set."""
    for out in range(256):
        for in_ in range(0, 256, 7):
            history = "".join(HISTORY_OUT[out] + HISTORY_IN[in_])
            assert history_bits(history) == (out, in_)


def test_conn_state_from_history_follows_zeek() -> None:
    # Zeek's conn_state table (base/protocols/conn/main.zeek) for histories named there.
    for history, state in (("S", "S0"), ("Sr", "REJ"), ("ShADadFf", "SF"), ("ShADadF", "S2"), ("ShADadf", "S3"),
                           ("ShADad", "S1"), ("ShADadR", "RSTO"), ("ShADadr", "RSTR"), ("SR", "RSTOS0"),
                           ("SF", "SH"), ("hr", "RSTRH"), ("hf", "SHR"), ("Dd", "OTH")):
        assert conn_state_from_history(history) == state, history
