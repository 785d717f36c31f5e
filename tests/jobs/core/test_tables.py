"""Input tables as Delta: what Spark reads is the snapshot the log names, and the digest follows
the version. Tables are written by farmwatch's writer or by delta-rs, as another team's job would.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from pyspark.testing import assertDataFrameEqual

from flows.ledger import input_digest
from jobs.core.contracts import INPUT_TABLES
from jobs.core.tables import UnsupportedTableError, delta_snapshot, parquet_files, write_table
from jobs.core.tables import read_table as read_stored_table
from jobs.ingest.validate import InputTableError, read_table

SCHEMA = "account_id string, amount double, event_ts timestamp"
ROWS = [("a1", 3.5, datetime(2026, 6, 1, 12)), ("a2", 0.0, datetime(2026, 6, 2, 8))]


def test_delta_round_trip_keeps_values_types_and_version(spark, tmp_path):
    df = spark.createDataFrame(ROWS, SCHEMA)
    write_table(spark, df, tmp_path / "payments", "delta")
    back, version = read_stored_table(spark, tmp_path / "payments", "delta")
    assert version == 0
    assertDataFrameEqual(back, df)
    assert back.schema == df.schema
    # the log says timestamp, not timestamp_ntz, so other Delta readers see the same type
    assert '"type":"timestamp"' in DeltaTable(str(tmp_path / "payments")).schema().to_json()
    assert spark.conf.get("spark.sql.parquet.outputTimestampType") == "INT96"  # restored


def test_delta_read_follows_the_log_not_the_folder(spark, tmp_path):
    table = tmp_path / "signups"
    write_table(spark, spark.createDataFrame(ROWS, SCHEMA), table, "delta")
    replacement = pa.table(
        {
            "account_id": ["b1"],
            "amount": [9.0],
            "event_ts": pa.array([datetime(2026, 6, 3)], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(table), replacement, mode="overwrite")  # old files stay on disk
    assert len(list(table.glob("*.parquet"))) > 1
    back, version = read_stored_table(spark, table, "delta")
    assert version == 1
    assertDataFrameEqual(back, spark.createDataFrame([("b1", 9.0, datetime(2026, 6, 3))], SCHEMA))


def test_empty_delta_table_reads_with_its_schema(spark, tmp_path):
    table = tmp_path / "labels"
    write_deltalake(str(table), pa.table({"account_id": pa.array([], pa.string())}))
    back, version = read_stored_table(spark, table, "delta")
    assert (version, back.count(), back.columns) == (0, 0, ["account_id"])


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"configuration": {"delta.enableDeletionVectors": "true"}}, "deletionVectors"),
        ({"configuration": {"delta.columnMapping.mode": "name"}}, "columnMapping"),
        ({"partition_by": ["shard"]}, "partitioned by \\['shard'\\]"),
    ],
)
def test_delta_features_that_need_a_delta_reader_are_refused(tmp_path, options, refused):
    table = tmp_path / "ip_events"
    write_deltalake(str(table), pa.table({"account_id": ["a"], "shard": [1]}), **options)
    with pytest.raises(UnsupportedTableError, match=refused):
        delta_snapshot(table)


def test_ingest_names_the_table_when_the_lake_is_not_delta(spark, tmp_path):
    contract = next(c for c in INPUT_TABLES if c.name == "payments")
    write_table(spark, spark.createDataFrame(ROWS, SCHEMA), tmp_path / "payments", "parquet")
    assert read_table(spark, tmp_path, contract, "parquet").count() == 2
    with pytest.raises(InputTableError, match="'payments': no Delta transaction log"):
        read_table(spark, tmp_path, contract, "delta")


def test_digest_follows_the_delta_version_not_stray_files(spark, tmp_path):
    lake = tmp_path / "lake"
    write_table(spark, spark.createDataFrame(ROWS, SCHEMA), lake / "payments", "delta")
    (lake / "_world.json").write_text("{}")
    first = input_digest(lake)
    assert input_digest(lake) == first
    (lake / "payments" / "part-aborted-writer.parquet").write_bytes(b"PAR1")
    assert input_digest(lake) == first  # not in the log, so not in the table
    extra = pa.table(
        {
            "account_id": ["a3"],
            "amount": [1.0],
            "event_ts": pa.array([datetime(2026, 6, 4)], pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(str(lake / "payments"), extra, mode="append")
    assert input_digest(lake) != first


def test_parquet_nanosecond_timestamps_are_read_as_timestamps(spark, tmp_path):
    """pandas writes nanoseconds by default; Spark 4 alone refuses them (PARQUET_TYPE_ILLEGAL)."""
    table = tmp_path / "payments"
    table.mkdir()
    pd.DataFrame(
        {
            "account_id": ["a1", "a2"],
            "naive": pd.to_datetime(["2026-06-01 10:00:00.123456789", None]),
            "utc": pd.to_datetime(
                ["2026-06-01 10:00:00", "1969-12-31 23:59:59.9999999"], utc=True, format="ISO8601"
            ),
            "count": [1, 2],
        }
    ).to_parquet(table / "part-0.parquet")
    (table / "_SUCCESS").write_bytes(b"")
    assert parquet_files(table) == [str(table / "part-0.parquet")]
    back, _ = read_stored_table(spark, table, "parquet")
    expected = spark.createDataFrame(
        [
            ("a1", datetime(2026, 6, 1, 10, 0, 0, 123456), datetime(2026, 6, 1, 10), 1),
            ("a2", None, datetime(1969, 12, 31, 23, 59, 59, 999999), 2),
        ],
        "account_id string, naive timestamp, utc timestamp, count long",
    )
    assertDataFrameEqual(back, expected)
    assert back.schema == expected.schema


def test_files_in_different_units_are_read_apart_and_put_together(spark, tmp_path):
    table = tmp_path / "ip_events"
    table.mkdir()
    for unit, account in (("ns", "nanos"), ("us", "micros"), ("ms", "millis")):
        frame = pd.DataFrame(
            {"account_id": [account], "event_ts": pd.to_datetime(["2026-06-01 10:00:00.5"])}
        )
        frame["event_ts"] = frame["event_ts"].astype(f"datetime64[{unit}]")
        frame.to_parquet(table / f"part-{unit}.parquet")
    back, _ = read_stored_table(spark, table, "parquet")
    moment = datetime(2026, 6, 1, 10, 0, 0, 500000)
    rows = sorted((r["account_id"], r["event_ts"]) for r in back.collect())
    assert rows == [("micros", moment), ("millis", moment), ("nanos", moment)]
