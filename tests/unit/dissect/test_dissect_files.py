"""``freezeframe dissect PCAP... --out DIR`` on local files: the evidence bucket's layout, the progress bar, errors.

Row counts come from tshark on the same file (the reference); order independence, hashes and the all-or-nothing
output are checked against the fixture itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from freezeframe_local.cli import main

from freezeframe.capture.pcapio import PcapReader, PcapWriter, open_capture
from freezeframe.contracts.errors import CaptureFormatError
from freezeframe.contracts.keys import table_part_key
from freezeframe.dissect.crosslayer import CLUSTER_PART
from freezeframe.dissect.files import first_timestamp
from freezeframe.investigate.query import connect_local, run
from tests.fixtures.tcp_captures import lossy_capture

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample.pcap"
TSHARK = shutil.which("tshark")
TABLES = ("connections", "dns", "http", "tls", "dissect_errors", "node_stats", "node_config", "service_flows")
ALL_TABLES = (*TABLES, "services", "endpoints")


def split_capture(source: Path, directory: Path, parts: int) -> list[Path]:
    """The capture cut into ``parts`` pcap files, named so that name order is the reverse of time order."""
    with source.open("rb") as stream:
        reader = PcapReader(stream)
        link_type, packets = reader.link_type, list(reader)
    size = -(-len(packets) // parts)
    paths = []
    for index in range(parts):
        path = directory / f"segment-{parts - index}.pcap"
        with path.open("wb") as stream:
            writer = PcapWriter(stream, link_type)
            for packet in packets[index * size:(index + 1) * size]:
                writer.write(packet.ts_ns, packet.data, packet.orig_len)
        paths.append(path)
    return paths


def read_tables(out: Path, node: str = "local") -> dict[str, list[dict[str, object]]]:
    """Each table's one part, found in the evidence bucket's layout."""
    parts = {name: list(out.glob(f"tables/{name}/dt=*/incident_id=*/{node}.parquet")) for name in TABLES}
    assert all(len(found) == 1 for found in parts.values()), parts
    return {name: pq.read_table(found[0]).to_pylist() for name, found in parts.items()}


def tshark_count(path: Path, display_filter: str, field: str) -> int:
    """How many values of ``field`` the frames matching ``display_filter`` carry (a frame may hold several)."""
    assert TSHARK is not None
    args = [TSHARK, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-e", field, "-E", "occurrence=a",
            "-E", "aggregator=,"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return sum(len(line.split(",")) for line in out.splitlines() if line)


def tshark_conversations(path: Path) -> int:
    assert TSHARK is not None
    out = subprocess.run([TSHARK, "-n", "-r", str(path), "-q", "-z", "conv,tcp", "-z", "conv,udp"], check=True,
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if "<->" in line)


def test_split_files_in_any_order_give_the_tables_tshark_counts(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    paths = split_capture(SAMPLE, tmp_path, 3)
    out = tmp_path / "out"
    assert main(["dissect", *map(str, paths), "--out", str(out), "--progress"]) == 0
    printed = capsys.readouterr()
    assert "dissect local" in printed.err  # the progress bar
    assert "dissected 149 packets from 3 file(s)" in printed.out
    tables = read_tables(out)
    if TSHARK is None:
        pytest.skip("tshark is not installed: the expected counts come from it")
    assert len(tables["connections"]) == tshark_conversations(SAMPLE)
    assert len(tables["dns"]) == tshark_count(SAMPLE, "dns.flags.response == 0", "dns.id")
    assert len(tables["http"]) == tshark_count(SAMPLE, "http.request", "http.request.method")  # pipelining: 2 a frame
    assert len(tables["tls"]) == tshark_count(SAMPLE, "tls.handshake.type == 1", "tls.handshake.type")
    # Connections crossing the file boundaries are one row each, whatever order the files were named in.
    whole = tmp_path / "whole"
    assert main(["dissect", str(SAMPLE), "--out", str(whole)]) == 0
    assert read_tables(whole) == tables


def test_summary_records_each_input_hash_and_a_rerun_overwrites(tmp_path: Path) -> None:
    paths = split_capture(SAMPLE, tmp_path, 2)
    out = tmp_path / "out"
    assert main(["dissect", *map(str, paths), "--out", str(out), "--node", "node-7", "--json"]) == 0
    first = {path.relative_to(out): path.read_bytes() for path in out.rglob("*.parquet")}
    summary = json.loads((out / "incidents" / "local" / "dissect" / "node-7.json").read_text())
    assert {entry["path"]: entry["sha256"] for entry in summary["inputs"]} == {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}
    assert [entry["path"] for entry in summary["inputs"]] == [str(paths[0]), str(paths[1])]  # time order
    assert main(["dissect", *map(str, paths), "--out", str(out), "--node", "node-7"]) == 0
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*.parquet")} == first
    assert not [path for path in out.rglob("*") if "partial" in path.name]


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_summary_names_the_engine_that_made_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           engine: str) -> None:
    if engine == "native":
        pytest.importorskip("freezeframe_native")
    monkeypatch.setenv("FREEZEFRAME_DISSECT_ENGINE", engine)
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-7"]) == 0
    summary = json.loads((out / "incidents" / "local" / "dissect" / "node-7.json").read_text())
    assert summary["engine"] == engine
    # time chunks in worker processes, each on the engine the variable names, merged
    chunked = tmp_path / "chunked"
    assert main(["dissect", str(SAMPLE), "--out", str(chunked), "--node", "node-7", "--chunk-seconds", "5"]) == 0
    summary = json.loads((chunked / "incidents" / "local" / "dissect" / "node-7.json").read_text())
    assert (summary["engine"], summary["stats"]["chunks"] > 1) == (engine, True)


def test_a_file_that_is_not_a_capture_is_reported_and_the_others_dissected(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"not a capture at all\n")
    lossy = tmp_path / "lossy.pcap"
    lossy_capture(5, conversations=2, steps=40).write(lossy)
    out = tmp_path / "out"
    assert main(["dissect", str(junk), str(lossy), "--out", str(out)]) == 0
    tables = read_tables(out)
    assert len(tables["connections"]) == 2
    assert [(row["segment"], row["kind"]) for row in tables["dissect_errors"]] == [(str(junk), "not_a_capture")]


def test_missing_input_or_bad_node_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), str(tmp_path / "missing.pcap"), "--out", str(out)]) == 2
    assert "not a readable file" in capsys.readouterr().err
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "../escape"]) == 2
    assert "not a valid name" in capsys.readouterr().err
    assert not out.exists()


def test_kubernetes_context_fills_the_pod_columns(tmp_path: Path) -> None:
    with SAMPLE.open("rb") as stream:
        first = next(iter(PcapReader(stream)))
    records = tmp_path / "k8s.jsonl"
    pod = {"schema": "freezeframe.k8s-pod/v1", "observed_ns": first.ts_ns - 1, "change": "SYNC", "namespace": "shop",
           "pod": "checkout-7d9f-abcde", "uid": "uid-1", "pod_ips": ["10.244.1.10"], "host_network": False,
           "workload_name": "checkout"}
    records.write_text(json.dumps(pod) + "\n")
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--k8s", str(records)]) == 0
    rows = read_tables(out)["connections"]
    with_pod = [row for row in rows if row["src_ip"] == "10.244.1.10"]
    assert with_pod and all(row["src_pod"] == "checkout-7d9f-abcde" and row["src_namespace"] == "shop"
                            for row in with_pod)
    assert all(row["src_pod"] is None for row in rows if row["src_ip"] != "10.244.1.10")
    records.write_text("{broken\n")
    assert main(["dissect", str(SAMPLE), "--out", str(tmp_path / "other"), "--k8s", str(records)]) == 2


def test_zstd_compressed_input(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    compressed = tmp_path / "sample.pcap.zst"
    compressed.write_bytes(zstandard.ZstdCompressor().compress(SAMPLE.read_bytes()))
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    assert main(["dissect", str(SAMPLE), "--out", str(plain)]) == 0
    assert main(["dissect", str(compressed), "--out", str(packed)]) == 0
    assert read_tables(plain)["connections"] == read_tables(packed)["connections"]


def test_output_is_laid_out_like_the_evidence_bucket(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["dissect", str(SAMPLE), "--out", str(out), "--node", "node-3", "--incident", "inc-42"]) == 0
    first_ns = first_timestamp(SAMPLE)
    assert first_ns is not None
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    day = f"{datetime.fromtimestamp(first_ns / 1e9, tz=UTC):%Y-%m-%d}"
    # The cluster-wide tables (Services, EndpointSlices) are one part named "cluster", whichever node wrote it.
    assert written == sorted([table_part_key(name, first_ns, "inc-42",
                                             CLUSTER_PART if name in ("services", "endpoints") else "node-3")
                              for name in ALL_TABLES]
                             + [f"views/{name}/dt={day}/incident_id=inc-42/incident.parquet" for name in ALL_TABLES]
                             + ["incidents/inc-42/dissect/node-3.json"])
    # The local engine reads the directory as it reads the bucket: partition columns from the path.
    rows = run(None, "SELECT DISTINCT dt, incident_id, node FROM freezeframe.connections", connect_local(out)).rows
    assert rows == ((f"{datetime.fromtimestamp(first_ns / 1e9, tz=UTC):%Y-%m-%d}", "inc-42", "node-3"),)
    assert main(["dissect", str(SAMPLE), "--out", str(tmp_path / "bad"), "--incident", "../up"]) == 2
    assert not (tmp_path / "bad").exists()


def test_first_timestamp_is_the_first_packet_the_reader_yields(tmp_path: Path) -> None:
    """On pcap and pcapng in every layout, damaged or not (the fuzz bases and mutations): the first packet of
    `runs()`, the reference walk, or None when it yields none or the file is not a capture."""
    from tests.fixtures.native_compare import fuzz_inputs  # noqa: PLC0415 - shared fuzz machinery

    def first_of_runs(path: Path) -> int | None:
        try:
            with path.open("rb") as stream:
                for _link_type, packets in open_capture(stream).runs():
                    return packets[0].ts_ns
        except CaptureFormatError:
            return None
        return None

    path = tmp_path / "capture"
    seen = 0
    for label, data in fuzz_inputs(seed=20261207, count=600):
        path.write_bytes(data)
        expected = first_of_runs(path)
        seen += expected is not None
        assert first_timestamp(path) == expected, label
    with SAMPLE.open("rb") as stream:
        assert first_timestamp(SAMPLE) == next(iter(PcapReader(stream))).ts_ns
    assert seen > 300  # most inputs still hold a packet


BLAS_PROBE = """
import json, os, sys
seen = {}
class Watch:  # the environment at the moment numpy is first imported
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and "env" not in seen:
            seen["env"] = os.environ.get("OPENBLAS_NUM_THREADS")
sys.meta_path.insert(0, Watch())
from freezeframe_local.cli import main
status = main(["dissect", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"status": status, "numpy": "numpy" in sys.modules, **seen}))
"""
NUMPY_THREADS = "import os, sys, numpy; print(len(os.listdir('/proc/self/task')))"


def test_the_command_starts_no_blas_thread_pool(tmp_path: Path) -> None:
    """numpy (loaded by pyarrow, and by the reference engine) would start a spinning OpenBLAS thread per core; the
    command sets one thread before numpy loads, unless the user chose a number."""
    env = {name: value for name, value in os.environ.items() if name != "OPENBLAS_NUM_THREADS"}
    env["FREEZEFRAME_DISSECT_ENGINE"] = "python"  # the compiled core's run loads no numpy at all (below)
    probe = [sys.executable, "-c", BLAS_PROBE, str(SAMPLE), str(tmp_path / "out")]
    found = subprocess.run(probe, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1]
    assert json.loads(found) == {"status": 0, "numpy": True, "env": "1"}
    chosen = subprocess.run(probe, check=True, capture_output=True, text=True,
                            env={**env, "OPENBLAS_NUM_THREADS": "3"}).stdout.splitlines()[-1]
    assert json.loads(chosen)["env"] == "3"
    # What the setting does: numpy alone starts no thread with it, and (on more than one core) a pool without it.
    one = subprocess.run([sys.executable, "-c", NUMPY_THREADS], check=True, capture_output=True, text=True,
                         env={**env, "OPENBLAS_NUM_THREADS": "1"})
    assert int(one.stdout) == 1
    if (os.cpu_count() or 1) > 1:
        bare = subprocess.run([sys.executable, "-c", NUMPY_THREADS], check=True, capture_output=True, text=True,
                              env=env)
        assert int(bare.stdout) > 1


HUGE_PAGES_PROBE = """
import ctypes, json, os, sys
# As a fresh shell starts it: THP allowed. (A test before this one may have run the command in pytest's process,
# whose mimalloc then disabled THP for it, and the setting is inherited.) PR_SET_THP_DISABLE is 41.
assert ctypes.CDLL(None, use_errno=True).prctl(41, 0, 0, 0, 0) == 0
if sys.argv[1] == "command":
    from freezeframe_local.cli import main
    assert main(["dissect", sys.argv[2], "--out", sys.argv[3]]) == 0
import pyarrow as pa
import pyarrow.compute as pc
values = pc.add(pa.nulls(16_000_000, pa.int64()).fill_null(1), 1)  # 2 x 128 MB from pyarrow's pool, written
def field(path, name):
    return next(int(line.split()[1]) for line in open(path) if line.startswith(name))
print(json.dumps({"thp": field("/proc/self/status", "THP_enabled:"),
                  "huge_kb": field("/proc/self/smaps_rollup", "AnonHugePages:")}))
"""


def test_the_command_runs_without_transparent_huge_pages(tmp_path: Path) -> None:
    """pyarrow's mimalloc advises huge pages for its arenas, so its transient buffers (the Parquet writer's) faulted
    in and zeroed fresh 2 MB pages over and over: 9 % of a whole dissection. The command sets MIMALLOC_ALLOW_THP=0
    before anything loads (config.PROCESS_DEFAULTS): the process has THP off and pyarrow's memory in 4 KB pages;
    a user's own setting stands."""
    env = {name: value for name, value in os.environ.items() if name != "MIMALLOC_ALLOW_THP"}
    command = [sys.executable, "-c", HUGE_PAGES_PROBE, "command", str(SAMPLE), str(tmp_path / "out")]
    found = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1]
    assert json.loads(found) == {"thp": 0, "huge_kb": 0}
    chosen = subprocess.run([*command[:-1], str(tmp_path / "chosen")], check=True, capture_output=True, text=True,
                            env={**env, "MIMALLOC_ALLOW_THP": "1"}).stdout.splitlines()[-1]
    assert json.loads(chosen)["thp"] == 1
    # What the setting prevents: pyarrow alone, where the system allows huge pages on advice, takes them.
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if mode.exists() and "[never]" not in mode.read_text():
        bare = subprocess.run([sys.executable, "-c", HUGE_PAGES_PROBE, "pyarrow"], check=True, capture_output=True,
                              text=True, env=env).stdout.splitlines()[-1]
        assert json.loads(bare)["huge_kb"] > 0


NOT_LOADED = ("freezeframe.dissect.job", "freezeframe.adapters.s3", "freezeframe.contracts.documents",
              "freezeframe.contracts.parallel", "freezeframe.freeze.node_state", "aws_lambda_powertools", "boto3",
              "numpy", "freezeframe.dissect.apps", "freezeframe.dissect.connections", "freezeframe.dissect.chunks",
              "freezeframe.dissect.warmup", "pyarrow.compute", "botocore")
IMPORT_PROBE = """
import json, sys
from freezeframe_local.cli import main
status = main(["dissect", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"status": status, "loaded": sorted(name for name in sys.argv[3:] if sys.modules.get(name))}))
"""


def test_the_command_on_the_compiled_core_loads_neither_the_s3_job_nor_the_documents(tmp_path: Path) -> None:
    """A tenth of a CPU-second of every local dissect went to importing the S3 job, the evidence documents, the
    node-state readers and powertools, none of which it uses; `dissect.engine` and lazy imports keep them out, and
    the reference engine's trackers and the time chunks' modules too. pyarrow.compute (0.05 CPU-s to import) too: the
    one-observer views call their kernels by name (dissect.kernels)."""
    pytest.importorskip("freezeframe_native")
    env = {**os.environ, "FREEZEFRAME_DISSECT_ENGINE": "native"}
    probe = [sys.executable, "-c", IMPORT_PROBE, str(SAMPLE), str(tmp_path / "out"), *NOT_LOADED]
    found = subprocess.run(probe, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1]
    assert json.loads(found) == {"status": 0, "loaded": []}
    # The probe sees a module that is loaded: the reference engine's run loads the job.
    reference = subprocess.run(probe, check=True, capture_output=True, text=True,
                               env={**env, "FREEZEFRAME_DISSECT_ENGINE": "python"}).stdout.splitlines()[-1]
    assert {"freezeframe.dissect.job", "numpy", "freezeframe.dissect.apps", "pyarrow.compute"} <= set(
        json.loads(reference)["loaded"])


NUMPY_PROBE = """
import json, sys
if sys.argv[1] == "numpy-first":
    import numpy  # loaded before the command: it has no reason to forgo it
from freezeframe_local.cli import main
status = main(["dissect", *sys.argv[2:]])
print(json.dumps({"status": status, "numpy": sys.modules.get("numpy") is not None}))
"""


def test_the_command_on_the_compiled_core_forgoes_numpy_and_writes_the_same_files(tmp_path: Path) -> None:
    """pyarrow imports numpy whenever it is installed, 0.12-0.15 CPU-s of every run; the command on the compiled core
    never uses it, so it goes without (config.forgo_numpy). Its files, Kubernetes context and node state included,
    are the same bytes as a run of the same command with numpy loaded first; time chunks still load it (they use it)."""
    pytest.importorskip("freezeframe_native")
    from freezeframe_local import sample_context  # noqa: PLC0415 - the demo's context for the sample capture

    records = tmp_path / "k8s.jsonl"
    records.write_text("".join(json.dumps(record) + "\n" for record in sample_context.k8s_records("demo")))
    state = tmp_path / "node-state.jsonl"
    state.write_bytes(b"".join(document.encode() + b"\n"
                               for document in sample_context.node_state_documents("demo")))
    env = {**os.environ, "FREEZEFRAME_DISSECT_ENGINE": "native"}
    runs = {}
    for how in ("forgone", "numpy-first"):
        out = tmp_path / how
        args = [str(SAMPLE), "--out", str(out), "--node", sample_context.NODE, "--k8s", str(records),
                "--node-state", str(state)]
        found = subprocess.run([sys.executable, "-c", NUMPY_PROBE, how, *args], check=True, capture_output=True,
                               text=True, env=env).stdout.splitlines()[-1]
        assert json.loads(found) == {"status": 0, "numpy": how == "numpy-first"}
        runs[how] = {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*.parquet")}
    assert len(runs["forgone"]) >= 18  # every table and view
    assert runs["forgone"] == runs["numpy-first"]
    tables = read_tables(tmp_path / "forgone", sample_context.NODE)
    assert any(row["src_pod"] for row in tables["connections"]) and tables["node_stats"]
    chunked = subprocess.run([sys.executable, "-c", NUMPY_PROBE, "plain", str(SAMPLE), "--out",
                              str(tmp_path / "chunked"), "--chunk-seconds", "20"], check=True, capture_output=True,
                             text=True, env=env).stdout.splitlines()[-1]
    assert json.loads(chunked) == {"status": 0, "numpy": True}
