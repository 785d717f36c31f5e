from __future__ import annotations

import shutil
from datetime import date, datetime
from pathlib import Path

import pytest
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import IngestSettings, LakeSettings, Settings
from jobs.core.contracts import API_USAGE, INPUT_TABLES, IP_EVENTS, PAYMENTS, SIGNUPS
from jobs.core.layout import RunLayout
from jobs.core.stage import StageContext
from jobs.ingest import stage as ingest
from jobs.ingest.validate import InputTableError, RunWindow, read_table, validate_table

WINDOW = RunWindow.for_run(date(2026, 6, 5), 10, "2000-01-01", 24, now=datetime(2026, 6, 6, 12))
D = datetime(2026, 6, 1, 10)

RAW_USAGE = T.StructType(
    [  # requests arrives as a string: a producer bug we must survive
        T.StructField("account_id", T.StringType()),
        T.StructField("usage_date", T.StringType()),
        T.StructField("requests", T.StringType()),
        T.StructField("tokens", T.LongType()),
        T.StructField("prompt_signature", T.StringType()),
        T.StructField("active_hours_mask", T.IntegerType()),
        T.StructField("client_fingerprint", T.StringType()),
    ]
)


def usage_row(account="a1", day="2026-06-01", requests="20", **kw):
    row = {
        "account_id": account,
        "usage_date": day,
        "requests": requests,
        "tokens": 100,
        "prompt_signature": "ps_1",
        "active_hours_mask": 255,
        "client_fingerprint": "c1",
    }
    row.update(kw)
    return tuple(row[f.name] for f in RAW_USAGE)


def reasons(quarantined):
    return sorted((r["reason"], r["raw"]) for r in quarantined.collect())


def test_clean_rows_pass_typed_and_unchanged(spark):
    raw = spark.createDataFrame([usage_row("a1"), usage_row("a2", requests="7")], RAW_USAGE)
    accepted, quarantined, outside = validate_table(raw, API_USAGE, WINDOW)
    expected = spark.createDataFrame(
        [
            ("a1", date(2026, 6, 1), 20, 100, "ps_1", 255, "c1"),
            ("a2", date(2026, 6, 1), 7, 100, "ps_1", 255, "c1"),
        ],
        API_USAGE.schema,
    )
    assertDataFrameEqual(accepted, expected)
    assert quarantined.count() == 0 and outside.count() == 0


def test_broken_rows_are_quarantined_with_their_reason(spark):
    raw = spark.createDataFrame(
        [
            usage_row("ok"),
            usage_row(None),  # null key
            usage_row("bad_type", requests="abc"),  # wrong type
            usage_row("neg", requests="-3"),  # out of contract
            usage_row("old", day="1970-01-01"),  # impossible timestamp
            usage_row("future", day="2031-01-01"),
            usage_row("dup"),
            usage_row("dup"),  # exact duplicate
            usage_row("key", requests="5"),
            usage_row("key", requests="6"),  # key duplicate
        ],
        RAW_USAGE,
    )
    accepted, quarantined, _ = validate_table(raw, API_USAGE, WINDOW)
    got = [reason for reason, _ in reasons(quarantined)]
    assert got == sorted(
        [
            "null_key:account_id",
            "bad_type:requests",
            "bad_value:requests",
            "impossible_ts",
            "impossible_ts",
            "duplicate",
            "duplicate",
        ]
    )
    kept = sorted((r["account_id"], r["requests"]) for r in accepted.collect())
    assert kept == [("dup", 20), ("key", 5), ("ok", 20)]
    assert all(row["table"] == "api_usage" for row in quarantined.collect())
    assert any('"requests":"abc"' in raw for _, raw in reasons(quarantined))


def test_the_copy_kept_is_the_one_whose_json_sorts_first_whatever_the_input_order(spark):
    copies = [
        usage_row("k", requests="7"),
        usage_row("k", requests="10"),  # "10" < "7" as JSON text: this one is kept
        usage_row("k", requests="9"),
        usage_row("k", requests="-1"),  # a reason keeps it out of the choice
        usage_row("single", requests="3"),
    ]
    for order in (copies, copies[::-1], copies[2:] + copies[:2]):
        raw = spark.createDataFrame(order, RAW_USAGE).repartition(3)
        accepted, quarantined, _ = validate_table(raw, API_USAGE, WINDOW)
        kept = sorted((r["account_id"], r["requests"]) for r in accepted.collect())
        assert kept == [("k", 10), ("single", 3)]
        got = [(reason, '"requests":"-1"' in text) for reason, text in reasons(quarantined)]
        assert got == [("bad_value:requests", True), ("duplicate", False), ("duplicate", False)]


def test_disallowed_values_and_window(spark):
    rows = [
        ("a1", D, "pi_1", "411111", "credit", "94107", "US", 20.0, "approved"),
        ("a2", D, "pi_2", "411111", "credit", "94107", "US", 20.0, "stolen"),
        ("a3", D, "pi_3", "411111", "gift", "94107", "US", -1.0, "approved"),
        (
            "a4",
            datetime(2026, 5, 1),
            "pi_4",
            "411111",
            "credit",
            "94107",
            "US",
            1.0,
            "approved",
        ),  # before the 10-day window: not read
        (
            "a5",
            datetime(2026, 6, 6, 1),
            "pi_5",
            "411111",
            "credit",
            "94107",
            "US",
            1.0,
            "approved",
        ),  # after the run date: not read
    ]
    raw = spark.createDataFrame(rows, PAYMENTS.schema)
    accepted, quarantined, outside = validate_table(raw, PAYMENTS, WINDOW)
    assert [r["account_id"] for r in accepted.collect()] == ["a1"]
    assert sorted(r["reason"] for r in quarantined.collect()) == [
        "bad_value:card_type;bad_value:amount",
        "bad_value:outcome",
    ]
    assert sorted(r["account_id"] for r in outside.collect()) == ["a4", "a5"]


def test_missing_required_column_names_table_and_column(spark):
    raw = spark.createDataFrame([("a1", "x@y.z")], "account_id string, email string")
    with pytest.raises(ValueError, match=r"'signups'.*required.*signup_ts"):
        validate_table(raw, SIGNUPS, WINDOW)


def _context(spark, settings, run_dir: Path) -> StageContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return StageContext(spark, settings, RunLayout(run_dir), date(2026, 6, 5))


def _write_lake(spark, lake: Path) -> None:
    for contract in INPUT_TABLES:
        spark.createDataFrame([], contract.schema).write.parquet(str(lake / contract.name))


def test_missing_and_unreadable_tables_are_named(spark, tmp_path):
    lake = tmp_path / "lake"
    _write_lake(spark, lake)
    settings = Settings(lake=LakeSettings(home=tmp_path, lake=lake))
    for part in (lake / "payments").iterdir():
        part.unlink()
    (lake / "payments" / "part-0.parquet").write_bytes(b"this is not parquet")
    with pytest.raises(InputTableError, match="payments"):
        ingest.run(_context(spark, settings, tmp_path / "run"))
    shutil.rmtree(lake / "labels")
    with pytest.raises(InputTableError, match="'labels' not found"):
        read_table(spark, lake, INPUT_TABLES[-1])


def test_run_counts_reconcile_and_are_written(spark, tmp_path):
    lake = tmp_path / "lake"
    _write_lake(spark, lake)
    bad_usage = spark.createDataFrame(
        [usage_row("a1"), usage_row(None), usage_row("a1")], RAW_USAGE
    )
    bad_usage.write.mode("overwrite").parquet(str(lake / "api_usage"))
    settings = Settings(
        lake=LakeSettings(home=tmp_path, lake=lake), ingest=IngestSettings(lookback_days=10)
    )
    counts = ingest.run(_context(spark, settings, tmp_path / "run"), now=datetime(2026, 6, 6))
    usage = counts["api_usage"]
    assert (usage["read"], usage["accepted"], usage["quarantined"]) == (3, 1, 2)
    assert all(c["read"] == c["accepted"] + c["quarantined"] for c in counts.values())
    assert spark.read.parquet(str(tmp_path / "run" / "quarantine" / "api_usage")).count() == 2
    assert (tmp_path / "run" / "ingest_counts.json").is_file()


def test_ip_addresses_of_both_families_are_accepted_in_one_spelling(spark):
    rows = [
        ("a1", D, "198.51.100.7", 7922, "residential", "login"),
        ("a1", D, "::FFFF:198.51.100.7", 7922, "residential", "login"),  # the same address
        ("a2", D, "2001:0DB8:0000:0000:0001:0000:0000:0001", 7922, "residential", "login"),
        ("a3", D, "[2001:db8::2]", 7922, "residential", "login"),
        ("a4", D, "198.51.100.256", 7922, "residential", "login"),
        ("a5", D, "2001:db8::1::2", 7922, "residential", "login"),
        ("a6", D, "not an address", 7922, "residential", "login"),
    ]
    raw = spark.createDataFrame(rows, IP_EVENTS.schema)
    accepted, quarantined, _ = validate_table(raw, IP_EVENTS, WINDOW)
    assert sorted((r["account_id"], r["ip"]) for r in accepted.collect()) == [
        ("a1", "198.51.100.7"),
        ("a2", "2001:db8::1:0:0:1"),
        ("a3", "2001:db8::2"),
    ]
    assert sorted(r["reason"] for r in quarantined.collect()) == [
        "bad_value:ip",
        "bad_value:ip",
        "bad_value:ip",
        "duplicate",
    ]
    assert accepted.count() + quarantined.count() == raw.count()
