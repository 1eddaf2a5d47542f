"""Fuzzing the dissection input: mutated pcap and pcapng captures through the reader and every tracker.

Mutations: bit flips, truncation, corrupted length fields (record and block lengths), spliced-in garbage and
overwritten ranges. For each input: no exception escapes (except ``CaptureFormatError`` when the file header
itself is destroyed), nothing hangs (a per-input alarm), and every packet that lies wholly before the first
mutated byte is read back unchanged, so the valid part of a damaged capture is always dissected.

The base captures are the fixture and slices of it, written with ``struct`` here as little- and big-endian pcap
and pcapng, so the record boundaries (and so the expected intact prefix) are known independently of the reader.
The unit tier runs a 500-input sample; ``tests/bench/test_fuzz_capture_long.py`` runs 10,000 inputs
(``make bench-fuzz-ci``) and ``tests/bench/bench_fuzz.py`` the same machinery for longer (``make bench-fuzz``).
"""

from __future__ import annotations

import io
import random
import signal
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from freezeframe.capture.pcapio import Packet, PcapReader, open_capture
from freezeframe.contracts.errors import CaptureFormatError
from freezeframe.dissect import AppTracker, ConnectionTracker
from freezeframe.dissect.tcp.batch import feed_batches

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
SAMPLE_INPUTS = 500  # the unit tier's sample; the bench runs 10,000 (and make bench-fuzz 300,000)
PER_INPUT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class Base:
    """A well-formed capture and, for each packet, the offset where its record or block ends."""

    name: str
    data: bytes
    packets: list[Packet]
    ends: list[int]

    def intact_before(self, offset: int) -> int:
        """How many packets lie wholly before ``offset``."""
        return sum(1 for end in self.ends if end <= offset)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body = _pad(body)
    return struct.pack(order + "II", block_type, 12 + len(body)) + body + struct.pack(order + "I", 12 + len(body))


def build_pcap(name: str, packets: list[Packet], order: str) -> Base:
    out = bytearray(struct.pack(order + "IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262_144, 1))
    ends = []
    for packet in packets:
        sec, ns = divmod(packet.ts_ns, 1_000_000_000)
        out += struct.pack(order + "IIII", sec, ns, len(packet.data), packet.orig_len) + packet.data
        ends.append(len(out))
    return Base(name, bytes(out), packets, ends)


def build_pcapng(name: str, packets: list[Packet], order: str) -> Base:
    tsresol = struct.pack(order + "HH", 9, 1) + b"\x09\0\0\0" + struct.pack(order + "HH", 0, 0)
    out = bytearray(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    out += _block(order, 1, struct.pack(order + "HHI", 1, 0, 262_144) + tsresol)
    ends = []
    for packet in packets:
        head = struct.pack(order + "IIIII", 0, packet.ts_ns >> 32, packet.ts_ns & 0xFFFFFFFF, len(packet.data),
                           packet.orig_len)
        out += _block(order, 6, head + packet.data)
        ends.append(len(out))
    return Base(name, bytes(out), packets, ends)


def bases(whole: bool = False) -> list[Base]:
    """Slices of the fixture (DNS, HTTP, TLS and plain TCP parts); ``whole`` adds the entire fixture."""
    with SAMPLE.open("rb") as stream:
        packets = list(PcapReader(stream))
    out = []
    slices = [(0, 25), (40, 65), (100, 125), (len(packets) - 25, len(packets))]
    for start, stop in slices + ([(0, len(packets))] if whole else []):
        part = packets[start:stop]
        for order in "<>":
            out.append(build_pcap(f"pcap{order}{start}", part, order))
            out.append(build_pcapng(f"pcapng{order}{start}", part, order))
    return out


# -- mutations: each returns the mutated bytes and the first offset it changed

Mutation = Callable[[random.Random, Base], tuple[bytes, int]]


def flip_bits(rng: random.Random, base: Base) -> tuple[bytes, int]:
    data = bytearray(base.data)
    offsets = [rng.randrange(len(data)) for _ in range(rng.randint(1, 8))]
    for offset in offsets:
        data[offset] ^= 1 << rng.randrange(8)
    return bytes(data), min(offsets)


def truncate(rng: random.Random, base: Base) -> tuple[bytes, int]:
    cut = rng.randrange(len(base.data))
    return base.data[:cut], cut


def corrupt_length(rng: random.Random, base: Base) -> tuple[bytes, int]:
    """A record's captured/original length or a block's leading/trailing length set to a hostile value."""
    index = rng.randrange(len(base.packets))
    start = base.ends[index - 1] if index else base.ends[0] - len(base.packets[0].data) - 64
    start = max(start, 0)
    is_ng = base.name.startswith("pcapng")
    order = "<" if "<" in base.name else ">"
    if is_ng:
        field = rng.choice([start + 4, base.ends[index] - 4, start + 20, start + 24])  # lengths, caplen, origlen
    else:
        field = rng.choice([start + 8, start + 12])  # incl_len, orig_len
    value = rng.choice([0, 1, 3, 0xFFFFFFFF, 0x7FFFFFFF, 0x40000, 0x1000000, rng.randrange(1 << 32),
                        rng.randrange(4096)])
    data = bytearray(base.data)
    if field + 4 > len(data):
        return bytes(data), len(data)
    data[field:field + 4] = struct.pack(order + "I", value)
    return bytes(data), field


def splice_garbage(rng: random.Random, base: Base) -> tuple[bytes, int]:
    at = rng.randrange(len(base.data) + 1)
    garbage = rng.randbytes(rng.choice([1, 3, 4, 16, 100, 1000, rng.randrange(1, 5000)]))
    return base.data[:at] + garbage + base.data[at:], at


def overwrite(rng: random.Random, base: Base) -> tuple[bytes, int]:
    at = rng.randrange(len(base.data))
    size = rng.randrange(1, 200)
    fill = rng.choice([b"\0" * size, b"\xff" * size, rng.randbytes(size)])
    return base.data[:at] + fill + base.data[at + size:], at


MUTATIONS: list[Mutation] = [flip_bits, truncate, corrupt_length, splice_garbage, overwrite]


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(_signum: int, _frame: object) -> None:
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(slots=True)
class Outcome:
    packets: int
    problems: int
    rejected: bool


def check(base: Base, data: bytes, first_changed: int, tables: bool = True) -> Outcome:
    """Read and dissect one mutated input; assert the intact prefix survives. Raises on any escape.

    ``tables`` also builds every table from the trackers' state (the slow, per-input part).
    """

    with deadline(PER_INPUT_TIMEOUT_S):
        try:
            reader = open_capture(io.BytesIO(data))
        except CaptureFormatError:
            assert first_changed < 28, f"{base.name}: header at offset <28 intact, yet rejected"
            return Outcome(0, 0, True)
        tracker = ConnectionTracker("fuzz", AppTracker("fuzz"))
        read: list[Packet] = []
        for link_type, packets in reader.runs(max_packets=64):
            read += packets
            tracker.feed(link_type, packets)
        batched = ConnectionTracker("fuzz", AppTracker("fuzz"))
        batched_reader = open_capture(io.BytesIO(data))
        feed_batches(batched, batched_reader.record_batches(max_bytes=4096))  # the path a dissection job takes
        assert batched.stats == tracker.stats, f"{base.name}: the batched path counted differently"
        assert {kind: problem.count for kind, problem in batched_reader.problems.items()} == \
            {kind: problem.count for kind, problem in reader.problems.items()}, f"{base.name}: reader problems differ"
        if tables:
            expected = {"connections": tracker.finish(), **tracker.app_tables()}
            for name, table in {"connections": batched.finish(), **batched.app_tables()}.items():
                assert table.equals(expected[name]), f"{base.name}: the batched path's {name} differ"
    intact = base.intact_before(first_changed)
    assert read[:intact] == base.packets[:intact], f"{base.name}: the {intact} packets before offset " \
                                                   f"{first_changed} were not all read back unchanged"
    assert tracker.stats.packets == len(read)
    return Outcome(len(read), sum(p.count for p in reader.problems.values()), False)


def run(inputs: int, seed: int, whole: bool = False, tables_every: int = 1) -> dict[str, int]:
    """``inputs`` mutated captures from ``seed``; tables are built for every ``tables_every``-th input."""
    rng = random.Random(seed)
    all_bases = bases(whole)
    totals = {"inputs": 0, "rejected": 0, "with_problems": 0, "packets": 0}
    for number in range(inputs):
        base = rng.choice(all_bases)
        mutate = rng.choice(MUTATIONS)
        data, first_changed = mutate(rng, base)
        try:
            outcome = check(base, data, first_changed, tables=number % tables_every == 0)
        except Exception as exc:
            raise AssertionError(f"seed {seed}: {mutate.__name__} on {base.name} (first change at "
                                 f"{first_changed}, {len(data)} bytes): {exc!r}") from exc
        totals["inputs"] += 1
        totals["rejected"] += outcome.rejected
        totals["with_problems"] += outcome.problems > 0
        totals["packets"] += outcome.packets
    return totals


def test_bases_are_well_formed() -> None:
    for base in bases(whole=True):
        outcome = check(base, base.data, len(base.data))
        assert outcome.packets == len(base.packets) and outcome.problems == 0, base.name


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__)
def test_each_mutation_kind_is_survived(mutate: Mutation) -> None:
    rng = random.Random(mutate.__name__)
    for base in bases():
        for _ in range(6):
            data, first_changed = mutate(rng, base)
            check(base, data, first_changed)


def test_garbage_between_records_is_skipped_and_the_rest_still_read() -> None:
    for base in bases():
        middle = len(base.packets) // 2
        at = base.ends[middle - 1]
        garbage = random.Random(7).randbytes(333)
        reader = open_capture(io.BytesIO(base.data[:at] + garbage + base.data[at:]))
        read = list(reader)
        assert read == base.packets, base.name  # resynchronised on the next record: nothing lost
        assert reader.problems["garbage_skipped"].count == 1
        assert reader.problems["garbage_skipped"].first_packet == middle


def test_a_sample_of_mutated_inputs() -> None:
    # The fast sample of the 10,000-input run, which is in tests/bench/test_fuzz_capture_long.py (`make
    # bench-fuzz-ci`); a different seed, so together they cover more inputs.
    totals = run(SAMPLE_INPUTS, seed=20261206, tables_every=4)
    assert totals["inputs"] == SAMPLE_INPUTS
    # The corpus really exercises damage: most inputs carry a counted problem or lose their header.
    assert totals["with_problems"] + totals["rejected"] > SAMPLE_INPUTS // 3, totals


def test_a_content_length_with_a_non_ascii_digit_is_counted_not_raised() -> None:
    """Found by this fuzzer (seed 4): str.isdigit() accepts digits such as '³' that int() rejects."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    def frame(client: bool, flags: str, seq: int, ack: int, payload: bytes = b"") -> bytes:
        ends = (("10.0.0.1", 40000), ("10.0.0.2", 80))
        (src, sport), (dst, dport) = ends if client else ends[::-1]
        return bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
                     / payload)

    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 8\xb3\r\n\r\n"  # 0xb3 is '\u00b3' in ISO-8859-1
    frames = [frame(True, "S", 100, 0), frame(False, "SA", 500, 101), frame(True, "A", 101, 501),
              frame(True, "PA", 101, 501, request), frame(False, "PA", 501, 101 + len(request), response)]
    tracker = ConnectionTracker("fuzz", AppTracker("fuzz"))
    tracker.feed(1, [Packet(1_767_225_600_000_000_000 + i * 1000, len(f), f) for i, f in enumerate(frames)])
    tables = tracker.app_tables()
    assert tracker.app is not None and tracker.app.stats.http_malformed == 1
    [request_row] = tables["http"].to_pylist()
    assert request_row["path"] == "/" and request_row["status"] is None  # the malformed response is not paired
