from datetime import UTC, datetime

import pytest

from freezeframe.contracts.errors import PayloadError
from freezeframe.contracts.keys import (
    hour_prefixes,
    parse_raw_segment_key,
    raw_segment_key,
    table_part_key,
    view_bucket_key,
    view_compact_key,
    view_file_bucket,
    view_file_number,
    view_key,
)
from freezeframe.contracts.models import to_ns

T0 = to_ns(datetime(2026, 11, 21, 12, 59, 55, tzinfo=UTC))


def test_raw_key_follows_the_design_layout_with_the_start_hour() -> None:
    key = raw_segment_key("prod", "ip-10-0-1-5.ec2.internal", T0, T0 + 10 * 10**9, "pcap.zst")
    # The segment ends in hour 13 but is filed under hour 12, its start.
    assert key == f"raw/prod/2026/11/21/12/ip-10-0-1-5.ec2.internal/{T0}-{T0 + 10 * 10**9}.pcap.zst"
    parsed = parse_raw_segment_key(key)
    assert parsed is not None
    assert (parsed.cluster, parsed.node, parsed.start_ns, parsed.ext) == ("prod", "ip-10-0-1-5.ec2.internal", T0,
                                                                          "pcap.zst")


def test_a_key_filed_under_the_wrong_hour_is_not_a_segment() -> None:
    key = f"raw/prod/2026/11/21/13/node-a/{T0}-{T0 + 1}.pcap.zst"
    assert parse_raw_segment_key(key) is None
    assert parse_raw_segment_key("raw/prod/2026/11/21/12/node-a/notes.txt") is None


def test_hour_prefixes_cover_the_window_and_the_hour_before() -> None:
    start = to_ns(datetime(2026, 11, 21, 12, 10, tzinfo=UTC))
    end = to_ns(datetime(2026, 11, 21, 14, 0, tzinfo=UTC))
    assert hour_prefixes("prod", start, end) == [
        "raw/prod/2026/11/21/11/", "raw/prod/2026/11/21/12/", "raw/prod/2026/11/21/13/", "raw/prod/2026/11/21/14/"]


def test_prefixes_cross_midnight() -> None:
    start = to_ns(datetime(2026, 12, 31, 23, 50, tzinfo=UTC))
    end = to_ns(datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert hour_prefixes("c", start, end) == ["raw/c/2026/12/31/22/", "raw/c/2026/12/31/23/", "raw/c/2027/01/01/00/"]


@pytest.mark.parametrize("node", ["a/b", "../x", "", "x" * 300, "node a"])
def test_names_that_would_break_the_layout_are_refused(node: str) -> None:
    with pytest.raises(PayloadError, match="node"):
        raw_segment_key("prod", node, T0, T0 + 1, "pcap.zst")


def test_table_parts_are_hive_partitioned_and_deterministic() -> None:
    key = table_part_key("connections", T0, "am-1", "node-a")
    assert key == "tables/connections/dt=2026-11-21/incident_id=am-1/node-a.parquet"
    assert table_part_key("connections", T0, "am-1", "node-a") == key


def test_part_keys_parse_back_to_their_partition() -> None:
    from freezeframe.contracts.keys import parse_table_part_key

    key = table_part_key("dns", T0, "am-1", "node-a")
    assert parse_table_part_key(key) == ("dns", "2026-11-21", "am-1", "node-a")
    assert parse_table_part_key("tables/dns/dt=2026-11-21/other.txt") is None


def test_without_a_glue_database_nothing_is_registered() -> None:
    from freezeframe.adapters.catalog import register_parts
    from freezeframe.contracts.config import Settings

    assert register_parts(Settings(), [table_part_key("dns", T0, "am-1", "node-a")]) == []


def test_the_keys_moved_into_the_layout_module() -> None:
    from freezeframe.contracts.keys import (
        RawKey,
        chunk_file_key,
        dissect_plan_key,
        dissect_plan_nodes_key,
        job_prefix,
        job_segment_key,
        merge_prefix,
        node_prefix,
        parse_job_segment_key,
        tables_prefix,
    )

    assert tables_prefix() == "tables/"
    assert node_prefix("index/c/2026/11/21/12/", "node-a") == "index/c/2026/11/21/12/node-a/"
    with pytest.raises(PayloadError):
        node_prefix("index/c/2026/11/21/12/", "a/b")
    assert dissect_plan_key("am-1") == "incidents/am-1/dissect/_plan/items.json"
    assert dissect_plan_nodes_key("am-1") == "incidents/am-1/dissect/_plan/nodes.json"
    assert chunk_file_key("am-1", "node-a", 3, "edge-dns") == \
        "incidents/am-1/dissect/_chunks/node-a/000003/edge-dns.parquet"
    assert merge_prefix("am-1", "node-a", "0123456789abcdef" * 4) == \
        "incidents/am-1/dissect/_merge/node-a/0123456789abcdef/"
    assert job_prefix("slow-db", "c") == "jobs/slow-db/c/"
    key = job_segment_key("slow-db", "c", "node-a", T0, T0 + 10, "pcap.zst")
    assert key == f"jobs/slow-db/c/2026/11/21/12/node-a/{T0}-{T0 + 10}.pcap.zst"
    assert parse_job_segment_key(key) == RawKey("c", "node-a", T0, T0 + 10, "pcap.zst")
    assert parse_job_segment_key(f"raw/c/2026/11/21/12/node-a/{T0}-{T0 + 10}.pcap") is None


def test_bucket_view_files_sit_in_the_views_folder_and_are_recognised_as_view_files() -> None:
    folder = "views/connections/dt=2026-01-01/incident_id=inc-1/"
    assert view_key("connections", "2026-01-01", "inc-1") == folder + "incident.parquet"
    assert view_bucket_key("connections", "2026-01-01", "inc-1", 3) == folder + "bucket-00003.parquet"
    assert view_bucket_key("connections", "2026-01-01", "inc-1", 3, 2) == folder + "bucket-00003-00002.parquet"
    assert [view_file_number(n) for n in ("incident.parquet", "incident-00004.parquet", "bucket-00003.parquet",
                                          "bucket-00003-00002.parquet", "other.parquet")] == [0, 4, 0, 2, None]
    assert [view_file_bucket(n) for n in ("incident.parquet", "bucket-00003.parquet",
                                          "bucket-00012-00001.parquet")] == [None, 3, 12]
    # a run of buckets compacted: part-<group>, numbered past about 128 MB; a view file, of no bucket
    assert view_compact_key("dns", "2026-01-01", "inc-1", 7) == \
        "views/dns/dt=2026-01-01/incident_id=inc-1/part-00007.parquet"
    assert view_compact_key("dns", "2026-01-01", "inc-1", 7, 1).endswith("/part-00007-00001.parquet")
    assert [view_file_number(n) for n in ("part-00007.parquet", "part-00007-00003.parquet", "part-7.parquet")] == \
        [0, 3, None]
    assert view_file_bucket("part-00007.parquet") is None
