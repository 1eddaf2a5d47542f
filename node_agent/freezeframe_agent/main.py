"""The agent's entry point: it only wires capture -> segmenter -> spool -> uploader together."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from freezeframe.adapters import s3 as s3io
from freezeframe.adapters.bus import SegmentBus, open_bus
from freezeframe.config import Settings, settings
from freezeframe.models import SegmentRecord
from freezeframe.pcapio import Packet
from freezeframe_agent import __version__
from freezeframe_agent.capture import ReplaySource, TcpdumpSource
from freezeframe_agent.segmenter import Segmenter
from freezeframe_agent.uploader import Uploader

logger = logging.getLogger(__name__)


class Source(Protocol):
    @property
    def link_type(self) -> int: ...
    @property
    def snaplen(self) -> int: ...
    @property
    def capture_filter(self) -> str: ...
    @property
    def kernel_drops(self) -> int: ...
    @property
    def agent_drops(self) -> int: ...

    def packets(self) -> Iterator[Packet | None]: ...


def run(config: Settings, source: Source, *, live: bool, stop: threading.Event | None = None,
        s3: Any = None, bus: SegmentBus | None = None, on_stop: Any = None) -> list[SegmentRecord]:
    """Runs one source to its end (or until `stop`), uploading each segment as it closes."""
    own_bus = bus is None
    bus = bus or open_bus(config)
    uploader = Uploader(config, s3 or s3io.client(config), bus)
    uploader.drain()  # a restart first ships what the previous run left in the spool
    segmenter = Segmenter(cluster=config.cluster, node=config.node_name, spool_dir=config.spool_dir,
                          link_type=source.link_type, snaplen=source.snaplen, period_s=config.segment_seconds,
                          capture_filter=source.capture_filter, agent_version=__version__, emit_empty=live)
    stopping = False
    try:
        for item in source.packets():
            if item is None:
                closed = segmenter.tick(time.time_ns())
            else:
                closed = segmenter.add(item.ts_ns, item.data, item.orig_len)
            if closed:
                uploader.drain()
            if stop is not None and stop.is_set() and not stopping:
                stopping = True
                if on_stop is not None:
                    on_stop()  # ends the source; its remaining packets still drain through the loop
        segmenter.flush(kernel_drops=source.kernel_drops, agent_drops=source.agent_drops)
        uploader.drain()
    finally:
        if own_bus:
            bus.close()
    return uploader.uploaded


def run_replay(config: Settings, path: Path, speedup: float = 1.0, retime: bool = True, **kwargs: Any
               ) -> list[SegmentRecord]:
    return run(config, ReplaySource(path, speedup=speedup, retime=retime), live=False, **kwargs)


def run_capture(config: Settings, interface: str, duration_s: float, bpf: str = "", snaplen: int = 262_144,
                command_prefix: tuple[str, ...] = (), **kwargs: Any) -> list[SegmentRecord]:
    source = TcpdumpSource(interface, bpf=bpf, snaplen=snaplen, command_prefix=command_prefix)
    stop = threading.Event()
    timer = threading.Timer(duration_s, stop.set)
    timer.start()
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return run(config, source, live=True, stop=stop, on_stop=source.stop, **kwargs)
    finally:
        timer.cancel()
        source.stop()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freezeframe-agent", description="freezeframe node agent")
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay", help="replay a pcap file as if captured live")
    replay.add_argument("pcap", type=Path)
    replay.add_argument("--speedup", type=float, default=1.0)
    replay.add_argument("--keep-timestamps", action="store_true", help="do not shift timestamps to now")
    capture = sub.add_parser("capture", help="capture from an interface with tcpdump")
    capture.add_argument("--interface", "-i", required=True)
    capture.add_argument("--duration", type=float, default=60.0, help="seconds to capture")
    capture.add_argument("--filter", default="", help="BPF capture filter")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='{"ts":"%(asctime)s","level":"%(levelname)s","msg":"%(message)s"}')
    config = settings()
    if args.command == "replay":
        records = run_replay(config, args.pcap, args.speedup, retime=not args.keep_timestamps)
    else:
        records = run_capture(config, args.interface, args.duration, args.filter)
    print(f"{len(records)} segment(s) uploaded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
