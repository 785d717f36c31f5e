"""A lake written with plain ``pandas.DataFrame.to_parquet`` goes through the ingest stage.

pandas' defaults are what a team preparing data in Python produces: nanosecond timestamps,
narrow integer columns, integer columns with gaps stored as float64, dates kept as ISO strings,
an optional column nobody filled left out.
"""

from __future__ import annotations

import json
from datetime import date, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyspark.testing import assertDataFrameEqual

from jobs.core.config import IngestSettings, LakeSettings, Settings
from jobs.core.contracts import IP_EVENTS, SIGNUPS
from jobs.core.layout import RunLayout
from jobs.core.stage import StageContext
from jobs.ingest import stage as ingest


def _lake(root):
    tables = {
        "signups": pd.DataFrame(  # client_fingerprint left out
            {
                "account_id": ["a1", "a2", "a3"],
                "signup_ts": pd.to_datetime(
                    ["2026-05-01 09:14:03.123456789", "2026-05-02 10:00:00", "2026-05-03"],
                    format="ISO8601",
                ),
                "email": ["a@x.com", None, "c@x.com"],
                "signup_ip": ["203.0.113.7", "203.0.113.8", "203.0.113.9"],
                "signup_asn": np.array([7922, 7922, 3320], dtype="int32"),
                "device_fingerprint": ["d1", "d2", "d3"],
                "country": ["US", "US", "DE"],
            }
        ),
        "payments": pd.DataFrame(
            {
                "account_id": ["a1", "a2", "a3"],
                "payment_ts": pd.to_datetime(["2026-06-01 10:00"] * 3, utc=True),
                "instrument_fingerprint": ["pi_1", "pi_2", "pi_3"],
                "card_bin": ["414720"] * 3,
                "card_type": ["virtual", "credit", "debit"],
                "billing_postcode": ["94107"] * 3,
                "billing_country": ["US"] * 3,
                "amount": np.array([20, 5, 7], dtype="int16"),
                "outcome": ["approved", "declined", "stolen"],
            }
        ),
        "ip_events": pd.DataFrame(
            {
                "account_id": ["a1", "a2", "a3"],
                "event_ts": pd.to_datetime(
                    ["2026-06-01 14:02:11", "2026-06-02", "2026-05-01"], format="ISO8601"
                ),
                "ip": ["198.51.100.23", "198.51.100.24", "198.51.100.25"],
                "asn": [21928.0, np.nan, 21928.0],  # int with a gap: float64
                "asn_type": ["residential", "mobile", "residential"],
                "event_type": ["login", "api_session", "login"],
            }
        ),
        "api_usage": pd.DataFrame(
            {
                "account_id": ["a1", "a2", "a3"],
                "usage_date": ["2026-06-01", "2026-06-02", "June 3"],
                "requests": np.array([26, 3, 1], dtype="int32"),
                "tokens": pd.array([48210, None, 5], dtype="Int64"),
                "prompt_signature": ["ps_1", "ps_1", "ps_2"],
                "active_hours_mask": np.array([16128, 1, 2], dtype="uint16"),
                "client_fingerprint": ["c1", "c1", "c2"],
            }
        ),
        "labels": pd.DataFrame(
            {
                "account_id": ["a1", "a2"],
                "label": np.array([1, 0], dtype="int8"),
                "labelled_at": ["2026-05-20T00:00:00Z", "2026-05-21T12:30:00+00:00"],
                "source": ["trust_review", "verified_customer"],
            }
        ),
    }
    for name, frame in tables.items():
        (root / name).mkdir(parents=True)
        frame.to_parquet(root / name / "part-0.parquet")  # pandas' defaults, nothing else
    return root


def test_a_lake_written_by_pandas_is_ingested_with_the_right_counts(spark, tmp_path):
    lake = _lake(tmp_path / "lake")
    assert "timestamp[ns]" in str(pq.read_schema(lake / "signups" / "part-0.parquet"))
    settings = Settings(
        lake=LakeSettings(home=tmp_path, lake=lake), ingest=IngestSettings(lookback_days=10)
    )
    layout = RunLayout(tmp_path / "run")
    (tmp_path / "run").mkdir()
    ctx = StageContext(spark, settings, layout, date(2026, 6, 5))

    counts = ingest.run(ctx, now=datetime(2026, 6, 6))

    got = {
        name: (c["read"], c["accepted"], c["quarantined"], c["out_of_window"], c["missing_columns"])
        for name, c in counts.items()
    }
    assert got == {
        "signups": (3, 3, 0, 0, ["client_fingerprint"]),
        "payments": (3, 2, 1, 0, []),  # outcome "stolen"
        "ip_events": (2, 2, 0, 1, []),  # 2026-05-01 is before the 10-day window
        "api_usage": (3, 2, 1, 0, []),  # "June 3" is no ISO date
        "labels": (2, 2, 0, 0, []),
    }
    written = json.loads(layout.ingest_counts.read_text())
    assert written["tables"]["signups"]["missing_columns"] == ["client_fingerprint"]
    reasons = spark.read.parquet(str(layout.quarantine("api_usage"))).collect()
    assert [r["reason"] for r in reasons] == ["bad_type:usage_date"]

    signups = spark.read.parquet(str(layout.accepted("signups")))
    expected = spark.createDataFrame(
        [
            (
                "a1",
                datetime(2026, 5, 1, 9, 14, 3, 123456),
                "a@x.com",
                "203.0.113.7",
                7922,
                "d1",
                None,
                "US",
            ),
            ("a2", datetime(2026, 5, 2, 10), None, "203.0.113.8", 7922, "d2", None, "US"),
            ("a3", datetime(2026, 5, 3), "c@x.com", "203.0.113.9", 3320, "d3", None, "DE"),
        ],
        SIGNUPS.schema,
    )
    assertDataFrameEqual(signups, expected)
    events = spark.read.parquet(str(layout.accepted("ip_events")))
    expected = spark.createDataFrame(
        [
            ("a1", datetime(2026, 6, 1, 14, 2, 11), "198.51.100.23", 21928, "residential", "login"),
            ("a2", datetime(2026, 6, 2), "198.51.100.24", None, "mobile", "api_session"),
        ],
        IP_EVENTS.schema,
    )
    assertDataFrameEqual(events, expected)
    usage = {
        r["account_id"]: r for r in spark.read.parquet(str(layout.accepted("api_usage"))).collect()
    }
    assert (usage["a1"]["usage_date"], usage["a1"]["requests"]) == (date(2026, 6, 1), 26)
    assert (usage["a2"]["tokens"], usage["a1"]["active_hours_mask"]) == (None, 16128)
