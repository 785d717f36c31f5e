"""Stored forms of contract columns: what ingest takes as a value and what it quarantines."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from functools import reduce

from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from jobs.core.contracts import (
    ACCEPTED_ENCODINGS,
    API_USAGE,
    INPUT_TABLES,
    IP_EVENTS,
    LABELS,
    PAYMENTS,
    SIGNUPS,
)
from jobs.ingest.encodings import missing_optional_columns
from jobs.ingest.validate import RunWindow, validate_table

WINDOW = RunWindow.for_run(date(2026, 6, 5), 10, "2000-01-01", 24, now=datetime(2026, 6, 6, 12))


def _union(frames):
    return reduce(lambda a, b: a.unionByName(b), frames)


def _reasons(quarantined):
    return sorted((r["reason"], r["raw"]) for r in quarantined.collect())


def test_every_contract_type_has_its_encodings_documented():
    documented = {e.contract_type for e in ACCEPTED_ENCODINGS}
    used = {c.dtype.simpleString() for t in INPUT_TABLES for c in t.columns}
    assert used <= documented, used - documented


def test_iso_8601_strings_are_times_and_days_in_utc(spark):
    labels = spark.createDataFrame(
        [
            ("z", 1, "2026-06-01T10:00:00Z", "chargeback"),
            ("offset", 1, "2026-06-01 10:00:00.25+02:00", "chargeback"),
            ("no_zone", 0, "2026-06-01T10:00:00", "verified_customer"),
            ("day_only", 0, "2026-06-01", "verified_customer"),
            ("nanos", 1, "2026-06-01T10:00:00.123456789Z", "trust_review"),
            ("garbage", 1, "June 1st", "trust_review"),
        ],
        "account_id string, label int, labelled_at string, source string",
    )
    usage = spark.createDataFrame(
        [
            ("day", "2026-06-01", 3, "ps"),
            ("stamp", "2026-06-02T23:59:59Z", 4, "ps"),
            ("garbage", "01/06/2026", 5, "ps"),
        ],
        "account_id string, usage_date string, requests int, prompt_signature string",
    )
    accepted, quarantined, _ = validate_table(labels, LABELS, WINDOW)
    expected = spark.createDataFrame(
        [
            ("z", 1, datetime(2026, 6, 1, 10), "chargeback"),
            ("offset", 1, datetime(2026, 6, 1, 8, 0, 0, 250000), "chargeback"),
            ("no_zone", 0, datetime(2026, 6, 1, 10), "verified_customer"),
            ("day_only", 0, datetime(2026, 6, 1), "verified_customer"),
            ("nanos", 1, datetime(2026, 6, 1, 10, 0, 0, 123456), "trust_review"),
        ],
        LABELS.schema,
    )
    assertDataFrameEqual(accepted, expected)
    assert [reason for reason, _ in _reasons(quarantined)] == ["bad_type:labelled_at"]

    accepted, quarantined, _ = validate_table(usage, API_USAGE, WINDOW)
    days = sorted((r["account_id"], r["usage_date"]) for r in accepted.collect())
    assert days == [("day", date(2026, 6, 1)), ("stamp", date(2026, 6, 2))]
    assert [reason for reason, _ in _reasons(quarantined)] == ["bad_type:usage_date"]


def test_numbers_are_not_times(spark):
    signups = spark.createDataFrame(
        [("seconds", 1780308000), ("millis", 1780308000000)],
        "account_id string, signup_ts long",
    )
    accepted, quarantined, _ = validate_table(signups, SIGNUPS, WINDOW)
    assert accepted.count() == 0
    assert [r for r, _ in _reasons(quarantined)] == ["bad_type:signup_ts"] * 2


# stored type -> (a value that is a count, a second value, what the second one becomes)
NUMBERS = {
    "byte": (T.ByteType(), 7, -1, "bad_value:requests"),
    "short": (T.ShortType(), 7, 300, 300),
    "int": (T.IntegerType(), 7, 2_000_000, 2_000_000),
    "long": (T.LongType(), 7, 2**40, 2**40),
    "uint64": (T.DecimalType(20, 0), Decimal(7), Decimal(2**63), "bad_type:requests"),
    "double": (T.DoubleType(), 7.0, 7.5, "bad_type:requests"),
    "float": (T.FloatType(), 7.0, float("nan"), "bad_type:requests"),
    "digits": (T.StringType(), "7", "7.0", "bad_type:requests"),
}


def test_integers_in_any_width_and_whole_numbers_are_counts(spark):
    """requests (bigint) and active_hours_mask (int) from every stored numeric form."""
    day = date(2026, 6, 1)
    accepted, quarantined = [], []
    for name, (stored, first, second, _) in [
        *NUMBERS.items(),
        ("bool", (T.BooleanType(), True, False, None)),
    ]:
        schema = T.StructType(
            [
                T.StructField("account_id", T.StringType()),
                T.StructField("usage_date", T.DateType()),
                T.StructField("requests", stored),
                T.StructField("prompt_signature", T.StringType()),
                T.StructField("active_hours_mask", stored),
            ]
        )
        rows = [
            (f"{name}:first", day, first, "ps", first),
            (f"{name}:second", day, second, "ps", None),
        ]
        kept, held, _ = validate_table(spark.createDataFrame(rows, schema), API_USAGE, WINDOW)
        accepted.append(kept)
        quarantined.append(held)
    kept = {
        r["account_id"]: (r["requests"], r["active_hours_mask"]) for r in _union(accepted).collect()
    }
    held = {json.loads(raw)["account_id"]: reason for reason, raw in _reasons(_union(quarantined))}
    for name, (_, _, _, becomes) in NUMBERS.items():
        assert kept[f"{name}:first"] == (7, 7), name
        if isinstance(becomes, int):
            assert kept[f"{name}:second"] == (becomes, None), name
        else:  # -1 is no count; 2**63 overflows bigint; 7.5, NaN and "7.0" are no integers
            assert held[f"{name}:second"] == becomes, name
    assert held == {
        **{f"{n}:second": b for n, (*_, b) in NUMBERS.items() if isinstance(b, str)},
        "bool:first": "bad_type:requests;bad_type:active_hours_mask",
        "bool:second": "bad_type:requests",
    }


def test_nan_and_infinite_amounts_are_bad_values_and_nested_values_bad_types(spark):
    payments = spark.createDataFrame(
        [
            ("ok", datetime(2026, 6, 1), "pi_1", 5.0, "approved", "credit"),
            ("nan", datetime(2026, 6, 1), "pi_2", float("nan"), "approved", "credit"),
            ("inf", datetime(2026, 6, 1), "pi_3", float("inf"), "approved", "credit"),
            ("minus_inf", datetime(2026, 6, 1), "pi_4", float("-inf"), "approved", "credit"),
        ],
        "account_id string, payment_ts timestamp, instrument_fingerprint string, amount double,"
        " outcome string, card_type string",
    )
    accepted, quarantined, _ = validate_table(payments, PAYMENTS, WINDOW)
    assert [r["account_id"] for r in accepted.collect()] == ["ok"]
    assert [reason for reason, _ in _reasons(quarantined)] == ["bad_value:amount"] * 3

    nested = spark.createDataFrame(
        [("a1", datetime(2026, 6, 1), ["x@y.z"]), ("a2", datetime(2026, 6, 1), None)],
        "account_id string, signup_ts timestamp, email array<string>",
    )
    accepted, quarantined, _ = validate_table(nested, SIGNUPS, WINDOW)
    assert [r["account_id"] for r in accepted.collect()] == ["a2"]
    assert [reason for reason, _ in _reasons(quarantined)] == ["bad_type:email"]


def test_absent_optional_columns_are_null_and_named(spark):
    raw = spark.createDataFrame(
        [("a1", datetime(2026, 6, 1), "x@y.z", "extra")],
        "account_id string, signup_ts timestamp, email string, not_in_contract string",
    )
    assert missing_optional_columns(raw, SIGNUPS) == [
        "signup_ip",
        "signup_asn",
        "device_fingerprint",
        "client_fingerprint",
        "country",
    ]
    accepted, quarantined, _ = validate_table(raw, SIGNUPS, WINDOW)
    expected = spark.createDataFrame(
        [("a1", datetime(2026, 6, 1), "x@y.z", None, None, None, None, None)], SIGNUPS.schema
    )
    assertDataFrameEqual(accepted, expected)
    assert [f.dataType for f in accepted.schema] == [c.dtype for c in SIGNUPS.columns]
    assert quarantined.count() == 0


def test_copies_are_told_by_the_whole_key_and_the_address_in_its_one_spelling(spark):
    # the search for copies leaves the address out of its hash: rows that differ only in the
    # address must still all be kept, and two spellings of one address are still one key
    def event(ip, account="a1", event_type="login", asn="64500"):
        return (account, "2026-06-01 10:00:00", ip, asn, event_type)

    rows = [
        event("198.51.100.1"),
        event("198.51.100.2"),
        event("2001:DB8::1"),
        event("2001:db8:0:0::1"),  # the address above, spelled another way: a copy
        event("198.51.100.1", event_type="payment"),
        event("198.51.100.1", account="a2"),
        event("198.51.100.3", asn="AS1"),  # no copy of anything: quarantined for its type
        event("198.51.100.3"),  # its key-mate above is unusable: this one is kept
    ]
    raw = spark.createDataFrame(
        rows, "account_id string, event_ts string, ip string, asn string, event_type string"
    )
    accepted, quarantined, _ = validate_table(raw, IP_EVENTS, WINDOW)
    kept = sorted((r["account_id"], r["ip"], r["event_type"]) for r in accepted.collect())
    assert kept == [
        ("a1", "198.51.100.1", "login"),
        ("a1", "198.51.100.1", "payment"),
        ("a1", "198.51.100.2", "login"),
        ("a1", "198.51.100.3", "login"),
        ("a1", "2001:db8::1", "login"),
        ("a2", "198.51.100.1", "login"),
    ]
    assert sorted(reason for reason, _ in _reasons(quarantined)) == ["bad_type:asn", "duplicate"]


def test_two_spellings_of_one_instant_are_one_key(spark):
    rows = [
        ("a1", "2026-06-01T10:00:00Z", "pi_1", "approved"),
        ("a1", "2026-06-01 12:00:00+02:00", "pi_1", "approved"),
    ]
    raw = spark.createDataFrame(
        rows, "account_id string, payment_ts string, instrument_fingerprint string, outcome string"
    )
    accepted, quarantined, _ = validate_table(raw, PAYMENTS, WINDOW)
    assert accepted.count() == 1
    assert [reason for reason, _ in _reasons(quarantined)] == ["duplicate"]
